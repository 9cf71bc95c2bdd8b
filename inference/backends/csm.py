"""Sesame CSM (``sesame/csm-1b``) through ``transformers``' ``CsmForConditionalGeneration``, batched.

CSM is a Llama backbone that predicts the first Mimi codebook of each 80 ms frame, a small depth decoder
that predicts the other codebooks of that frame, and the Mimi codec that turns frames into 24 kHz audio.
A request becomes the prompt ``<|begin_of_text|>[speaker]text<|end_of_text|>`` (the checkpoint's own
tokenizer adds the markers), so rows of different speakers share a batch; left padding is masked and
rotary positions are relative, so a row's tokens do not depend on its batch-mates' lengths.

- Voices are speaker ids (``0`` and ``1``: the two sides of the conversations CSM was trained on).
- ``temperature`` is the sampling temperature of both decoders (0: greedy); one per batch.
- Sampling uses the one global generator, so, as with Bark, a request that names a ``seed`` runs in a
  batch of its own under that seed and repeats exactly; requests without one batch freely.
- A row ends at its first frame whose codebooks (all but the last) are CSM's end-of-audio code, which is
  the rule ``generate`` stops on, or at its own length cap (about 2 s plus 1 s per 6 characters, so a
  runaway row cannot hold its batch for the model's whole context). A code the codec cannot decode
  (CSM's vocabulary is three codes wider than Mimi's codebooks) also ends the row.
- Mimi decodes the whole batch in one call: its decoder is causal, so the padding frames after a short
  row cannot reach that row's samples.
- ``speed`` is refused (CSM has no rate control).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from inference.backends.base import ModelInfo, SynthesisJob, SynthesisParams
from inference.backends.device import batch_generator, freeze, run_batch, torch_dtype
from inference.errors import InvalidTextError, ModelLoadError, UnknownVoiceError, UnsupportedParameterError

__all__ = ["CsmBackend"]

SPEAKERS = ("0", "1")
MAX_TEXT_TOKENS = 256
#: Frames during which the end-of-audio code cannot be chosen: a row always says something.
MIN_FRAMES = 2
_BASE_SECONDS = 2.0
_CHARS_PER_SECOND = 6.0


class _NoEarlyEnd:
    """A logits processor for the backbone: no end-of-audio code (or undecodable code) in codebook 0 for
    the first ``MIN_FRAMES`` frames, and never an undecodable one."""

    def __init__(self, eos: int, decodable: int) -> None:
        self.eos, self.decodable = eos, decodable

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        frames = input_ids.shape[1] if input_ids.ndim == 3 else 0  # 2-D: the text prompt, before any frame
        scores[:, self.decodable :] = -math.inf
        if frames < MIN_FRAMES:
            scores[:, self.eos] = -math.inf
        return scores


class CsmBackend:
    """``CsmForConditionalGeneration`` behind the ``Backend`` protocol."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, device: torch.device, dtype: str = "fp32") -> None:
        half = torch_dtype(dtype, device)
        self.model, self.tokenizer, self.device = model, tokenizer, device
        config = model.config
        codec = config.codec_config
        self.num_codebooks = int(config.num_codebooks)
        self.codebook_size = int(codec.codebook_size)
        self.eos = int(config.codebook_eos_token_id)
        self.frame_rate = float(codec.frame_rate)
        self.samples_per_frame = round(int(codec.sampling_rate) / self.frame_rate)
        self.max_positions = int(config.max_position_embeddings)
        self.max_tokens = min(MAX_TEXT_TOKENS, self.max_positions // 4)
        if self.num_codebooks != int(codec.num_quantizers):
            raise ModelLoadError(
                f"{name}: CSM predicts {self.num_codebooks} codebooks but its codec has {codec.num_quantizers}"
            )
        # generate(depth_decoder_*=...) updates the depth decoder's stored config in place: every call passes
        # all of them, starting from the checkpoint's own.
        depth = model.depth_decoder.generation_config
        self._depth_temperature = float(depth.temperature or 1.0)
        wider = int(config.depth_decoder_config.vocab_size)
        self._undecodable = list(range(self.codebook_size, wider))
        #: A hard cap on a row's audio, in seconds (None: only the per-text cap); benchmarks set it.
        self.max_row_seconds: float | None = None
        self._lock = threading.Lock()
        self._info = ModelInfo(
            name=name,
            family="csm",
            sample_rate_hz=int(codec.sampling_rate),
            languages=("en",),
            voices=SPEAKERS,
            default_voice=SPEAKERS[0],
            device=str(device),
            dtype=dtype,
        )
        freeze(model, device, half)

    @classmethod
    def from_pretrained(
        cls, path: str, *, name: str | None = None, device: str = "auto", dtype: str = "fp32"
    ) -> CsmBackend:
        from transformers import AutoTokenizer, CsmForConditionalGeneration

        from inference.backends.vits import resolve_device

        try:
            model = CsmForConditionalGeneration.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load CSM from {path}: {exc}") from exc
        return cls(model, tokenizer, name=name or path, device=resolve_device(device), dtype=dtype)

    # ------------------------------------------------------------------ protocol

    @property
    def info(self) -> ModelInfo:
        return self._info

    def unsayable(self, text: str) -> str:
        return ""  # a byte-level Llama tokenizer: every character reaches the model

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        speaker = params.voice or SPEAKERS[0]
        if speaker not in SPEAKERS:
            raise UnknownVoiceError(speaker, list(SPEAKERS))
        if params.speed != 1.0:
            raise UnsupportedParameterError("speed", "csm has no speaking-rate control; send speed 1.0")
        if not any(ch.isalnum() for ch in text):
            raise InvalidTextError
        with self._lock:
            ids = self.tokenizer(f"[{speaker}]{text.strip()}", add_special_tokens=True)["input_ids"]
        if len(ids) > self.max_tokens:
            raise InvalidTextError(f"a sentence is {len(ids)} tokens long; csm reads at most {self.max_tokens}")
        return [SynthesisJob(token_ids=np.asarray(ids, dtype=np.int64), params=params)]

    def batch_key(self, job: SynthesisJob) -> Hashable:
        params = job.params
        # One temperature per generate call; a seeded request alone (see the module docs).
        return (params.temperature, params.seed if params.seeded else None)

    def max_frames(self, job: SynthesisJob) -> int:
        """The row's length cap in frames: generous for its text (counted in characters, whatever the
        tokenizer's granularity), within the model's context."""
        with self._lock:
            chars = len(self.tokenizer.decode(job.token_ids, skip_special_tokens=True))
        seconds = _BASE_SECONDS + chars / _CHARS_PER_SECOND
        if self.max_row_seconds is not None:
            seconds = min(seconds, self.max_row_seconds)
        return max(MIN_FRAMES, min(math.ceil(seconds * self.frame_rate), self.max_positions - job.length))

    def warmup(self) -> None:
        self.synthesize(self.prepare("Hello.", SynthesisParams(seed=1, seeded=True)))

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        return run_batch(self.device, self._synthesize, jobs)

    @torch.inference_mode()
    def _synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        rows, width = len(jobs), max(job.length for job in jobs)
        pad = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        ids = torch.full((rows, width), pad, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for r, job in enumerate(jobs):  # left padding, as CSM's processor does
            ids[r, width - job.length :] = torch.from_numpy(job.token_ids)
            mask[r, width - job.length :] = 1
        caps = [self.max_frames(job) for job in jobs]
        first = jobs[0].params
        greedy = first.temperature is not None and first.temperature <= 0.0
        options: dict[str, Any] = {
            "do_sample": not greedy,
            "depth_decoder_do_sample": not greedy,
            "depth_decoder_temperature": self._depth_temperature,
            "depth_decoder_suppress_tokens": self._undecodable or None,
        }
        if first.temperature is not None and not greedy:
            options["temperature"] = options["depth_decoder_temperature"] = first.temperature
        with batch_generator(jobs, self.device):  # a seeded request (always alone) repeats
            frames = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max(caps),
                logits_processor=[_NoEarlyEnd(self.eos, self.codebook_size)],
                **options,
            )  # (rows, frames, codebooks)
        lengths = self._lengths(frames, caps)
        audio = self._decode(frames, lengths)
        return [audio[r, : lengths[r] * self.samples_per_frame].float().cpu().numpy() for r in range(rows)]

    def _lengths(self, frames: torch.Tensor, caps: list[int]) -> list[int]:
        """Each row's frame count: up to its end-of-audio frame, its first undecodable code, or its cap."""
        ended = (frames[:, :, :-1] == self.eos).all(dim=-1) | (frames >= self.codebook_size).any(dim=-1)
        steps = torch.arange(frames.shape[1], device=frames.device).expand_as(ended)
        first_end = torch.where(ended, steps, frames.shape[1]).min(dim=1).values.tolist()  # one host sync
        return [max(1, min(int(end), cap)) for end, cap in zip(first_end, caps, strict=True)]

    def _decode(self, frames: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Mimi on the whole batch, cut at the longest row; frames past a row's end become code 0."""
        longest = max(lengths)
        codes = frames[:, :longest, :].clone()
        keep = torch.arange(longest, device=codes.device)[None, :] < torch.tensor(lengths, device=codes.device)[:, None]
        codes = torch.where(keep[:, :, None] & (codes < self.codebook_size), codes, torch.zeros_like(codes))
        audio = self.model.codec_model.decode(codes.transpose(1, 2)).audio_values  # (rows, 1, samples)
        return audio[:, 0, :]  # type: ignore[no-any-return]
