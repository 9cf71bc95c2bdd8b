"""VITS through ``transformers``: MMS-TTS checkpoints and converted Piper voices, batched exactly.

``transformers``' ``VitsModel.forward`` takes one set of noise scales per call, draws one noise tensor
for the whole batch and lets padding leak into the vocoder. Chorus keeps its modules and weights but
drives them itself, so that:

* every row has its own temperature, speed, seed and speaker (any mix shares one forward pass);
* every row draws its noise from its own generator, so a seeded request sounds the same alone or batched;
* the HiFi-GAN decoder masks padding after every convolution, so a short row in a batch equals the same
  row synthesized alone (the stock decoder leaks the padding into its last 50-80 ms).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from transformers import VitsConfig, VitsModel

from inference.backends.base import ModelInfo, SynthesisJob, SynthesisParams, Voiced
from inference.backends.cuda_graphs import GraphedCall, padded_rows, row_bucket
from inference.backends.device import run_batch, torch_dtype
from inference.backends.hifigan import Mask, as_2d, convolutions_as_2d, from_2d, hifigan_body
from inference.backends.noise import seeded_normal
from inference.backends.text import TextFrontend, load_frontend
from inference.backends.vits_flow import flow_reverse
from inference.backends.vits_text import VitsTextSide
from inference.batcher import row_abandoned
from inference.errors import ModelLoadError, UnknownVoiceError

__all__ = ["ChorusVitsModel", "HifiGanResBlock2", "VitsBackend"]

log = logging.getLogger(__name__)


class HifiGanResBlock2(nn.Module):
    """HiFi-GAN's second residual block (one convolution per dilation), which Piper voices use."""

    def __init__(self, channels: int, kernel_size: int, dilation: Sequence[int], leaky_relu_slope: float) -> None:
        super().__init__()
        self.leaky_relu_slope = leaky_relu_slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2) for d in dilation
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = hidden_states + conv(nn.functional.leaky_relu(hidden_states, self.leaky_relu_slope))
        return hidden_states


class ChorusVitsModel(VitsModel):
    """``VitsModel`` whose decoder can use ``HifiGanResBlock2`` (``config.resblock_type == "2"``).

    With the default ``resblock_type`` ("1") it is exactly ``VitsModel``.
    """

    # Training-only modules that converted Piper checkpoints do not carry.
    _keys_to_ignore_on_load_missing = [  # noqa: RUF012 - transformers reads this class attribute
        r"posterior_encoder\.",
        r"duration_predictor\.post_",
        r"duration_predictor\.flows\.1\.",
    ]

    def __init__(self, config: VitsConfig) -> None:
        super().__init__(config)
        if str(getattr(config, "resblock_type", "1")) == "2":
            blocks = []
            for i in range(len(config.upsample_rates)):
                channels = config.upsample_initial_channel // (2 ** (i + 1))
                for kernel_size, dilation in zip(
                    config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True
                ):
                    blocks.append(HifiGanResBlock2(channels, kernel_size, dilation, config.leaky_relu_slope))
            self.decoder.resblocks = nn.ModuleList(blocks)


def fold_weight_norm(module: nn.Module) -> int:
    """Replace weight-norm reparametrisations by plain weights (inference needs only their product)."""
    folded = 0
    for sub in module.modules():
        parametrizations = getattr(sub, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            torch.nn.utils.parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
        elif hasattr(sub, "weight_g") and hasattr(sub, "weight_v"):
            torch.nn.utils.remove_weight_norm(sub)
            folded += 1
    return folded


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


_DURATION_STREAM, _PRIOR_STREAM = 1, 2


def _round_up(value: int, multiple: int) -> int:
    return value if multiple <= 1 else -(-value // multiple) * multiple


def _geometric(length: int) -> int:
    """``length`` rounded up on a geometric grid: steps of 16 up to 128, then eight steps an octave (at most
    1/8 of padded work, ~8 shapes an octave)."""
    return _round_up(length, max(16, 1 << max(0, length.bit_length() - 4)))


class VitsBackend:
    """A VITS checkpoint (MMS-TTS or converted Piper voice) behind the ``Backend`` protocol."""

    def __init__(
        self,
        model: ChorusVitsModel,
        frontend: TextFrontend,
        *,
        name: str,
        device: torch.device,
        dtype: str = "fp32",
        batch_decoder: bool | None = None,
        length_bucket: int | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        # Half precision: the flow and the vocoder (nearly all the FLOPs); on CPU bf16 only, where oneDNN has
        # native bf16 (AMX): their channels-last convolutions ran 2.5x faster there (fp32 stays the default:
        # bf16 is ~0.4 dB of log-mel away from it, fp32 matches Piper's ONNX voice to 1e-3).
        half = torch_dtype(dtype, device, cpu_bf16=True)
        self.model = model
        self.frontend = frontend
        self.device = device
        self.config: VitsConfig = model.config
        self.hop = int(math.prod(self.config.upsample_rates))
        # Batching the HiFi-GAN decoder pays on a GPU; on a few CPU cores running it row by row is faster
        # (no padded work); the README's performance section has the measurements.
        self.batch_decoder = device.type == "cuda" if batch_decoder is None else batch_decoder
        # Rounding padded lengths up keeps the number of distinct shapes small: cuDNN autotuning and later
        # CUDA graphs on CUDA; on CPU, oneDNN builds (and caches) kernels per shape, and a length it has not
        # seen measured twice as slow through the vocoder. Masking keeps the result exact, so it only costs
        # a little padded work. 0: a geometric grid (the CPU default, see _bucket).
        self.length_bucket = (16 if device.type == "cuda" else 0) if length_bucket is None else length_bucket
        self._half = half
        self._pinned: torch.Tensor | None = None
        # The text encoder and the duration predictor (three quarters of a batch's ~1,300 operations, on small
        # shapes) replayed from CUDA graphs per (rows, tokens) bucket: see inference/backends/cuda_graphs.py.
        # With the batched decoder the rest after the one host sync (noise, flow, vocoder) is graphed too, per
        # (rows, frames) bucket: ~100 operations (about half views) are then left to launch one by one.
        self._graphs = GraphedCall(device) if cuda_graphs and device.type == "cuda" else None
        self._tail_graphs = None
        if self._graphs is not None and self.batch_decoder:
            self._tail_graphs = GraphedCall(device, max_graphs=128)
        if cuda_graphs and self._graphs is None:
            log.info("CUDA graphs asked for, but %s runs on %s: not used", name, device)
        self._channels_last = False
        self.defaults = (
            float(self.config.noise_scale),
            float(self.config.noise_scale_duration),
            1.0 / float(self.config.speaking_rate),
        )
        voices = frontend.voices
        self._info = ModelInfo(
            name=name,
            family="vits",
            sample_rate_hz=int(self.config.sampling_rate),
            languages=frontend.languages,
            voices=tuple(voices),
            default_voice=voices[0] if voices else None,
            device=str(device),
            dtype=dtype,
            word_timestamps=True,
        )
        self._prepare_model()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "fp32",
        batch_decoder: bool | None = None,
        length_bucket: int | None = None,
        languages: Sequence[str] | None = None,
        cuda_graphs: bool = False,
    ) -> VitsBackend:
        """Load a VITS checkpoint (hub id or local directory) through ``from_pretrained``."""
        torch_device = resolve_device(device)
        try:
            model = ChorusVitsModel.from_pretrained(str(path))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load VITS model from {path}: {exc}") from exc
        frontend = load_frontend(Path(path) if Path(path).is_dir() else path, model.config, languages)
        return cls(
            model,
            frontend,
            name=name or str(path),
            device=torch_device,
            dtype=dtype,
            batch_decoder=batch_decoder,
            length_bucket=length_bucket,
            cuda_graphs=cuda_graphs,
        )

    def _prepare_model(self) -> None:
        model = self.model
        model.eval()
        fold_weight_norm(model)
        # The posterior encoder only serves training; dropping it frees memory (16 WaveNet layers on MMS).
        if hasattr(model, "posterior_encoder"):
            del model.posterior_encoder
        model.to(self.device, dtype=torch.float32)
        if self.device.type == "cpu":
            self._cpu_channels_last()
        if self.device.type == "cuda":
            # fp32 means fp32: TF32 convolutions make a row's samples depend on its batch's shape. Half
            # precision gives that exactness up anyway, and cuDNN's choices with TF32 off measured worse.
            exact = self._half is torch.float32
            torch.backends.cuda.matmul.allow_tf32 = not exact
            torch.backends.cudnn.allow_tf32 = not exact
        if self._half is not torch.float32:
            # The text encoder and the duration predictor are cheap and their spline flows are touchy in
            # half precision; the flow and the vocoder carry nearly all the FLOPs.
            model.flow.to(self._half)
            model.decoder.to(self._half)
        for param in model.parameters():
            param.requires_grad_(False)
        self._text = VitsTextSide(model)

    def _cpu_channels_last(self) -> None:
        """The flow and the vocoder as channels-last 2-D convolutions (see ``hifigan``): their tensors are
        (rows, channels, 1, time) from the flow on. transformers' flow code works unchanged on them (it
        splits, slices and concatenates channels only); measured on a 2-core AMX Xeon, this beat oneDNN
        convolutions with prepacked weights on 1-D tensors (reordered into oneDNN's layout and back around
        every convolution)."""
        convolutions_as_2d(self.model.flow)
        convolutions_as_2d(self.model.decoder)
        self._channels_last = True

    # ------------------------------------------------------------------ protocol

    @property
    def info(self) -> ModelInfo:
        """What this backend serves."""
        return self._info

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        """Text → one job per sentence the frontend finds."""
        if params.voice is not None and params.voice not in self._info.voices:
            raise UnknownVoiceError(params.voice, list(self._info.voices))
        segments = self.frontend.encode(text)
        if not params.timestamps:
            return [SynthesisJob(token_ids=ids, params=params) for ids in segments]
        words = self.frontend.align(text, segments)
        return [SynthesisJob(token_ids=ids, params=params, words=w) for ids, w in zip(segments, words, strict=True)]

    def unsayable(self, text: str) -> str:
        """Characters of ``text`` this model's frontend drops (phoneme frontends drop none)."""
        check = getattr(self.frontend, "unsayable", None)
        return str(check(text)) if check is not None else ""

    def batch_key(self, job: SynthesisJob) -> Hashable:
        """Every VITS job can share a forward pass: noise, speed, seed and speaker are per row."""
        return None

    def warmup(self) -> None:
        """Synthesize two short texts, alone and as a batch, to load kernels and allocate buffers."""
        jobs = self.prepare("Hello.", SynthesisParams(temperature=0.0))
        jobs += self.prepare("Warming up the model.", SynthesisParams(seed=1))
        self.synthesize(jobs[:1])
        self.synthesize(jobs)

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        """Run one batched forward pass; every waveform is trimmed to its own length."""
        return [voiced.audio for voiced in self.synthesize_timed(jobs)]

    def synthesize_timed(self, jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        """``synthesize``, with the samples each token lasted (its predicted duration): word timestamps."""
        return run_batch(self.device, self._synthesize, jobs, release=self._graphs is None)

    @torch.inference_mode()
    def _synthesize(self, jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        device = self.device
        batch = len(jobs)
        lengths = [job.length for job in jobs]
        max_len = self._bucket(max(lengths))

        ids = np.zeros((batch, max_len), dtype=np.int64)
        for row, job in enumerate(jobs):
            ids[row, : job.length] = job.token_ids
        ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
        len_t = torch.tensor(lengths, device=device)
        in_mask = (torch.arange(max_len, device=device)[None, :] < len_t[:, None]).to(torch.float32)
        in_mask = in_mask.unsqueeze(2)  # (B, T_in, 1): the text side runs (rows, tokens, channels)

        noise_scale, noise_w, length_scale = self._row_scales(jobs)
        # Rows at temperature 0 need no noise; if every row is, none is drawn at all.
        seeds = None
        if any(job.params.temperature != 0.0 for job in jobs):
            seeds = torch.tensor([job.params.seed for job in jobs], dtype=torch.int64, device=device)

        speaker = self._speaker_embeddings(jobs)
        prior_means, prior_log_var, log_duration = self._front(
            min(lengths) < max_len, ids_t, in_mask, noise_w, seeds, speaker
        )
        in_mask_c = in_mask.transpose(1, 2)  # (B, 1, T_in)
        duration = torch.ceil(torch.exp(log_duration) * in_mask_c * length_scale[:, None, None]).squeeze(1)
        frames_t = torch.clamp_min(duration.sum(dim=1), 1).long()
        # The one host sync (the output size depends on the predicted durations), which brings each token's
        # duration along for word timestamps.
        on_host = torch.cat((frames_t[:, None], duration.long()), dim=1).cpu().numpy()
        frames = on_host[:, 0].tolist()
        token_samples = on_host[:, 1:] * self.hop
        # Graphed, the frames are bucketed on the coarser geometric grid (fewer graphs: see _bucket).
        max_frames = _geometric(max(frames)) if self._tail_graphs is not None else self._bucket(max(frames))

        # Each output frame reads the token whose cumulative duration first exceeds the frame index.
        cumulative = torch.cumsum(duration, dim=1).contiguous()
        frame_index = torch.arange(max_frames, device=device, dtype=cumulative.dtype)
        token_index = torch.searchsorted(cumulative, frame_index.expand(batch, max_frames).contiguous(), right=True)
        token_index = token_index.clamp_max(max_len - 1)
        out_mask = (torch.arange(max_frames, device=device)[None, :] < frames_t[:, None]).to(torch.float32)
        out_mask = out_mask.unsqueeze(1)  # (B, 1, T_out)
        gather_index = token_index.unsqueeze(2).expand(-1, -1, prior_means.shape[2])
        means = torch.gather(prior_means, 1, gather_index).transpose(1, 2)  # (B, C, T_out)
        log_var = torch.gather(prior_log_var, 1, gather_index).transpose(1, 2)

        if self.batch_decoder:
            waves = self._back(means, log_var, out_mask, noise_scale, seeds, speaker)
            flat = self._to_host(waves[:batch, : max(frames) * self.hop])
            audio = [flat[row, : frames[row] * self.hop].copy() for row in range(batch)]
        else:
            latents, _, speaker_h = self._latents(means, log_var, out_mask, noise_scale, seeds, speaker)
            audio = self._rows(latents, speaker_h, frames)
        return [Voiced(wave, token_samples[row, : lengths[row]]) for row, wave in enumerate(audio)]

    def _latents(
        self,
        means: torch.Tensor,
        log_var: torch.Tensor,
        out_mask: torch.Tensor,
        noise_scale: torch.Tensor,
        seeds: torch.Tensor | None,
        speaker: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The flow's input (prior means plus each row's own noise, zero past each row's end), the output mask
        and the speaker embeddings, in the flow's precision and layout."""
        latents = means
        if seeds is not None:
            noise = seeded_normal(seeds, _PRIOR_STREAM, means.shape[1], means.shape[2])
            latents = means + noise * torch.exp(log_var) * noise_scale[:, None, None]
        latents = latents * out_mask
        half = self._half
        latents, out_mask_h = latents.to(half), out_mask.to(half)
        speaker_h = None if speaker is None else speaker.to(half)
        if self._channels_last:  # (rows, channels, 1, time) from here on: see _cpu_channels_last
            latents, out_mask_h = as_2d(latents), as_2d(out_mask_h)
            speaker_h = None if speaker_h is None else as_2d(speaker_h)
        return latents, out_mask_h, speaker_h

    def _back(
        self,
        means: torch.Tensor,
        log_var: torch.Tensor,
        out_mask: torch.Tensor,
        noise_scale: torch.Tensor,
        seeds: torch.Tensor | None,
        speaker: torch.Tensor | None,
    ) -> torch.Tensor:
        """Noise, flow (reverse) and vocoder over the whole batch with masks: (rows, samples) float32; from a
        CUDA graph when they are on (then with rows up to the bucket's, the padding rows to be dropped)."""
        if self._tail_graphs is None:
            return self._back_pass(means, log_var, out_mask, noise_scale, seeds, speaker)[0]
        bucket = row_bucket(means.shape[0])
        inputs = [padded_rows(t, bucket) for t in (means, log_var, out_mask, noise_scale, seeds, speaker)]
        key = (bucket, means.shape[2], seeds is None, speaker is None)
        return self._tail_graphs(key, self._back_pass, inputs)[0]

    def _back_pass(
        self,
        means: torch.Tensor,
        log_var: torch.Tensor,
        out_mask: torch.Tensor,
        noise_scale: torch.Tensor,
        seeds: torch.Tensor | None,
        speaker: torch.Tensor | None,
    ) -> tuple[torch.Tensor]:
        latents, mask, speaker_h = self._latents(means, log_var, out_mask, noise_scale, seeds, speaker)
        latents = flow_reverse(self.model.flow, latents, mask, speaker_h)
        return (self._decode(latents, mask, speaker_h).squeeze(1).float(),)

    def _rows(
        self, latents: torch.Tensor, speaker_h: torch.Tensor | None, frames: list[int]
    ) -> list[npt.NDArray[np.float32]]:
        """Flow (reverse) and vocoder row by row: on a few CPU cores that beats batching them (no padded work,
        benchmarks/bench_backend.py); only the cheap text side is batched. Each row is cut at its own length
        rounded up (fewer distinct shapes), its padding masked; waveforms trimmed to their own lengths."""
        model = self.model
        results = []
        for row, count in enumerate(frames):
            if row_abandoned(row):  # its caller went away while the batch ran (a barge-in): skip its work
                results.append(np.zeros(count * self.hop, dtype=np.float32))
                continue
            width = self._bucket(count)
            end = count if width > count else None  # the padded tail is zeroed (see hifigan)
            g = None if speaker_h is None else speaker_h[row : row + 1]
            single = flow_reverse(model.flow, latents[row : row + 1, ..., :width], end, g)
            wave = self._decode(single, end, g)
            results.append(wave.float().reshape(-1)[: count * self.hop].cpu().numpy())
        return results

    def _bucket(self, length: int) -> int:
        """``length`` rounded up to a multiple of ``length_bucket``, or with 0 to ``_geometric``'s grid."""
        if self.length_bucket > 0:
            return _round_up(length, self.length_bucket)
        return _geometric(length)

    def device_memory(self) -> dict[str, int]:
        """Accelerator memory in bytes (allocated, reserved, peak); empty on CPU."""
        if self.device.type != "cuda":
            return {}
        return {
            "allocated": int(torch.cuda.memory_allocated(self.device)),
            "reserved": int(torch.cuda.memory_reserved(self.device)),
            "peak": int(torch.cuda.max_memory_allocated(self.device)),
        }

    def _to_host(self, waves: torch.Tensor) -> npt.NDArray[np.float32]:
        """Copy a batch of waveforms to host memory; on CUDA through a reused pinned buffer.

        A pageable device-to-host copy of a 64-row batch measured 30 ms on an H200 (16 % of the batch).
        """
        if waves.device.type != "cuda":
            return waves.numpy()
        count = waves.numel()
        if self._pinned is None or self._pinned.numel() < count:
            self._pinned = torch.empty(max(count, 1 << 20), dtype=torch.float32, pin_memory=True)
        staging = self._pinned[:count].view(waves.shape)
        staging.copy_(waves, non_blocking=True)
        torch.cuda.current_stream(waves.device).synchronize()
        return staging.numpy()

    # ------------------------------------------------------------------ pieces of the forward pass

    def _row_scales(self, jobs: Sequence[SynthesisJob]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        default_noise, default_noise_w, default_length = self.defaults
        rows = []
        for job in jobs:
            temp = job.params.temperature
            factor = 1.0 if temp is None else temp
            rows.append((default_noise * factor, default_noise_w * factor, default_length / job.params.speed))
        table = torch.tensor(rows, dtype=torch.float32, device=self.device)
        return table[:, 0], table[:, 1], table[:, 2]

    def _speaker_embeddings(self, jobs: Sequence[SynthesisJob]) -> torch.Tensor | None:
        if self.config.num_speakers <= 1:
            return None
        voices = self._info.voices
        indices = [voices.index(job.params.voice) if job.params.voice else 0 for job in jobs]
        ids = torch.tensor([self.frontend.speaker_ids[i] for i in indices], device=self.device)
        embedded: torch.Tensor = self.model.embed_speaker(ids)
        return embedded.unsqueeze(-1)

    def _front(
        self,
        padded: bool,
        ids: torch.Tensor,
        in_mask: torch.Tensor,
        noise_w: torch.Tensor,
        seeds: torch.Tensor | None,
        speaker: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        """Text encoder and duration predictor: (prior means, prior log-variances, log-durations); from a
        CUDA graph when they are on, the batch padded to a bucket of rows with copies of its first row."""
        run = functools.partial(self._front_pass, padded)
        if self._graphs is None:
            return run(ids, in_mask, noise_w, seeds, speaker)
        rows, tokens = ids.shape
        bucket = row_bucket(rows)
        inputs = [padded_rows(t, bucket) for t in (ids, in_mask, noise_w, seeds, speaker)]
        key = (bucket, tokens, padded, seeds is None, speaker is None)
        return tuple(out[:rows] for out in self._graphs(key, run, inputs))

    def _front_pass(
        self,
        padded: bool,
        ids: torch.Tensor,
        in_mask: torch.Tensor,
        noise_w: torch.Tensor,
        seeds: torch.Tensor | None,
        speaker: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, prior_means, prior_log_var = self._text.encode(ids, in_mask, padded=padded)
        return prior_means, prior_log_var, self._log_durations(hidden, in_mask, speaker, noise_w, seeds)

    def _log_durations(
        self,
        hidden: torch.Tensor,
        in_mask: torch.Tensor,
        speaker: torch.Tensor | None,
        noise_w: torch.Tensor,
        seeds: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, 1, T_in) log-durations from the text encoder's (B, T_in, C) hidden state; ``in_mask`` is
        (B, T_in, 1)."""
        if not self.config.use_stochastic_duration_prediction:
            predictor: Any = self.model.duration_predictor
            in_mask_c = in_mask.transpose(1, 2)
            return predictor(hidden.transpose(1, 2), in_mask_c, speaker)  # type: ignore[no-any-return]
        # The stochastic predictor's reverse pass, with the noise drawn per row.
        rows, tokens = hidden.shape[:2]
        if seeds is None:
            latents = torch.zeros(rows, 2, tokens, device=hidden.device)
        else:
            noise = seeded_normal(seeds, _DURATION_STREAM, 2, tokens)
            latents = noise * in_mask.transpose(1, 2) * noise_w[:, None, None]
        return self._text.log_durations(hidden, in_mask, speaker, latents)

    def _decode(self, latents: torch.Tensor, mask: Mask, speaker: torch.Tensor | None) -> torch.Tensor:
        """HiFi-GAN forward; with ``mask`` every convolution's input is zero past each row's end.

        Zeroed inputs are what a lone row sees as the convolution's zero padding, so each row's samples
        equal its unbatched synthesis.
        """
        dec: Any = self.model.decoder
        slope = self.config.leaky_relu_slope
        hidden = dec.conv_pre(latents)
        if speaker is not None:
            hidden = hidden + dec.cond(speaker)
        hidden = hifigan_body(dec, hidden, mask, self.config.upsample_rates, slope)
        out = torch.tanh_(dec.conv_post(hidden))
        return from_2d(out) if self._channels_last else out
