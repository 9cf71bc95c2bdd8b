"""SpeechT5 (``microsoft/speecht5_tts`` + the ``speecht5_hifigan`` vocoder), batched and reproducible.

``transformers``' ``generate_speech`` batches with one stop length for the padded batch and with the
decoder prenet's dropout (always on, even in eval: Tacotron's trick for varied prosody) drawn from the
global generator with one mask shared by every row. Chorus keeps the modules and weights and drives the
autoregressive loop itself, so that:

* every row stops on its own (stop-token threshold or its own maximum length) and is trimmed to it;
* the prenet's dropout masks are counter-based hashes of the row's seed and step: a seeded request gives
  the same audio alone or batched, and ``temperature`` scales the dropout rate (0: none, deterministic;
  1: the model's own 0.5);
* the postnet runs per row and the vocoder masks padding, so rows never see their batch-mates;
* ``speed`` stretches the mel spectrogram in time before the vocoder (pitch unchanged).

Voices are speaker x-vectors (512 floats): ``*.npy`` files in the checkpoint's ``speakers/`` folder or in
``CHORUS_SPEAKERS_DIR``. The vocoder comes from the checkpoint's ``vocoder/`` folder, else from
``CHORUS_VOCODER`` (default ``microsoft/speecht5_hifigan``).
"""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from inference.backends.base import ModelInfo, SynthesisJob, SynthesisParams
from inference.backends.device import run_batch, torch_dtype
from inference.backends.hifigan import as_2d, convolutions_as_2d, from_2d, hifigan_body
from inference.backends.noise import seeded_uniform
from inference.errors import InvalidTextError, ModelLoadError, UnknownVoiceError
from inference.text.normalize import normalize

__all__ = ["DEFAULT_VOCODER", "SpeechT5Backend", "load_speakers"]

log = logging.getLogger(__name__)

DEFAULT_VOCODER = "microsoft/speecht5_hifigan"
_PRENET_STREAM = 0x5EED


def load_speakers(folders: Sequence[Path], dim: int) -> dict[str, npt.NDArray[np.float32]]:
    """Speaker x-vectors from ``*.npy`` files (name = file stem); a malformed file is named in the error."""
    speakers: dict[str, npt.NDArray[np.float32]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.npy")):
            try:
                vector = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{path}: not a readable .npy x-vector: {exc}") from exc
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if vector.shape != (dim,) or not np.isfinite(vector).all():
                raise ModelLoadError(
                    f"{path}: a speaker x-vector must be {dim} finite floats, got shape {vector.shape}"
                )
            speakers.setdefault(path.stem, vector)
    return speakers


class SpeechT5Backend:
    """``SpeechT5ForTextToSpeech`` + ``SpeechT5HifiGan`` behind the ``Backend`` protocol."""

    def __init__(
        self,
        model: Any,
        vocoder: Any,
        tokenizer: Any,
        speakers: dict[str, npt.NDArray[np.float32]],
        *,
        name: str,
        device: torch.device,
        dtype: str = "fp32",
        batch_decoder: bool | None = None,
        threshold: float = 0.5,
        max_length_ratio: float = 20.0,
    ) -> None:
        half = torch_dtype(dtype, device)
        if not speakers:
            raise ModelLoadError(
                "SpeechT5 needs speaker x-vectors and none were found: put 512-float .npy files in the "
                "checkpoint's speakers/ folder or in CHORUS_SPEAKERS_DIR (see the README: CMU Arctic x-vectors)"
            )
        self.model, self.vocoder, self.tokenizer = model, vocoder, tokenizer
        self.device = device
        self.dtype = half
        self.config = model.config
        self.threshold = threshold
        self.max_length_ratio = max_length_ratio
        self.batch_decoder = device.type == "cuda" if batch_decoder is None else batch_decoder
        self.hop = int(math.prod(vocoder.config.upsample_rates))
        self.reduction = int(self.config.reduction_factor)
        self.mel_bins = int(self.config.num_mel_bins)
        self.dropout = float(self.config.speech_decoder_prenet_dropout)
        names = tuple(sorted(speakers))
        self.speakers = torch.from_numpy(np.stack([speakers[n] for n in names])).to(device)
        self._speaker_index = {n: i for i, n in enumerate(names)}
        self._lock = threading.Lock()
        self._vocab = set(tokenizer.get_vocab())
        self._info = ModelInfo(
            name=name,
            family="speecht5",
            sample_rate_hz=int(vocoder.config.sampling_rate),
            languages=("en",),
            voices=names,
            default_voice=names[0],
            device=str(device),
            dtype=dtype,
        )
        model.eval()
        vocoder.eval()
        from inference.backends.vits import fold_weight_norm

        fold_weight_norm(vocoder)
        model.to(device, dtype=self.dtype)
        vocoder.to(device, dtype=torch.float32)  # small; fp32 keeps its tanh output clean
        self._vocoder_2d = device.type == "cpu"  # channels-last 2-D convolutions on CPU (see hifigan)
        if self._vocoder_2d:
            convolutions_as_2d(vocoder)
        for param in [*model.parameters(), *vocoder.parameters()]:
            param.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "fp32",
        batch_decoder: bool | None = None,
        speakers_dir: str | None = None,
        vocoder: str | None = None,
    ) -> SpeechT5Backend:
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Tokenizer

        from inference.backends.vits import resolve_device

        torch_device = resolve_device(device)
        local = Path(path)
        vocoder_source = vocoder or (str(local / "vocoder") if (local / "vocoder" / "config.json").is_file() else None)
        try:
            model = SpeechT5ForTextToSpeech.from_pretrained(path)
            tokenizer = SpeechT5Tokenizer.from_pretrained(path)
            hifigan = SpeechT5HifiGan.from_pretrained(vocoder_source or DEFAULT_VOCODER)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load SpeechT5 from {path} (vocoder {vocoder_source}): {exc}") from exc
        folders = [p for p in (local / "speakers", Path(speakers_dir) if speakers_dir else None) if p and p.is_dir()]
        if speakers_dir and not Path(speakers_dir).is_dir():
            raise ModelLoadError(f"CHORUS_SPEAKERS_DIR {speakers_dir} is not a folder")
        speakers = load_speakers(folders, int(model.config.speaker_embedding_dim))
        return cls(model, hifigan, tokenizer, speakers, name=name or path, device=torch_device, dtype=dtype,
                   batch_decoder=batch_decoder)  # fmt: skip

    # ------------------------------------------------------------------ protocol

    @property
    def info(self) -> ModelInfo:
        return self._info

    def unsayable(self, text: str) -> str:
        vocab = self._vocab
        spoken = normalize(text, "en")
        return "".join(
            dict.fromkeys(
                ch for ch in spoken if not ch.isspace() and ch not in vocab and unicodedata.category(ch)[0] != "P"
            )
        )

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        if params.voice is not None and params.voice not in self._speaker_index:
            raise UnknownVoiceError(params.voice, list(self._info.voices))
        with self._lock:
            ids = self.tokenizer(normalize(text, "en"))["input_ids"]
        unk = self.tokenizer.unk_token_id
        special = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, unk}
        if not any(i not in special for i in ids) or not any(ch.isalnum() for ch in text):
            raise InvalidTextError
        limit = int(self.config.max_text_positions)
        if len(ids) > limit:
            raise InvalidTextError(f"a sentence is {len(ids)} tokens long; this model reads at most {limit}")
        return [SynthesisJob(token_ids=np.asarray(ids, dtype=np.int64), params=params)]

    def batch_key(self, job: SynthesisJob) -> Hashable:
        return None  # speaker, seed, dropout rate and speed are all per row

    def warmup(self) -> None:
        jobs = self.prepare("Hello.", SynthesisParams(seed=1)) + self.prepare("Warming up.", SynthesisParams(seed=2))
        self.synthesize(jobs[:1])
        self.synthesize(jobs)

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        return run_batch(self.device, self._synthesize, jobs)

    @torch.inference_mode()
    def _synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        spectrograms = self._spectrograms(jobs)
        mels = [self._postnet_and_speed(spec, job.params.speed) for spec, job in zip(spectrograms, jobs, strict=True)]
        if self.batch_decoder and len(mels) > 1:
            waves = self._vocode_batch(mels)
        else:
            waves = [self._vocode(mel[None])[0] for mel in mels]
        return [w.float().cpu().numpy().reshape(-1) for w in waves]

    # ------------------------------------------------------------------ the autoregressive loop

    def _spectrograms(self, jobs: Sequence[SynthesisJob]) -> list[torch.Tensor]:
        """Mel frames before the postnet, one tensor (frames, mel) per job, each stopped on its own."""
        model, device = self.model, self.device
        rows = len(jobs)
        width = max(job.length for job in jobs)
        ids = torch.full((rows, width), int(self.config.pad_token_id), dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for r, job in enumerate(jobs):
            ids[r, : job.length] = torch.from_numpy(job.token_ids)
            mask[r, : job.length] = 1
        ids, mask = ids.to(device), mask.to(device)
        encoded = model.speecht5.encoder(input_values=ids, attention_mask=mask, return_dict=True).last_hidden_state
        seeds = torch.tensor([job.params.seed & (2**63 - 1) for job in jobs], dtype=torch.long, device=device)
        scales = [1.0 if job.params.temperature is None else job.params.temperature for job in jobs]
        rates = torch.tensor([min(0.9, self.dropout * scale) for scale in scales], dtype=torch.float32, device=device)
        speaker = self.speakers[[self._speaker_index[job.params.voice or self._info.voices[0]] for job in jobs]]
        speaker = nn.functional.normalize(speaker.to(self.dtype))
        max_steps = [max(1, int(job.length * self.max_length_ratio / self.reduction)) for job in jobs]
        frame = encoded.new_zeros(rows, self.mel_bins)
        cache = None
        outputs: list[torch.Tensor] = []
        stopped = [0] * rows
        prenet = model.speecht5.decoder.prenet
        postnet = model.speech_decoder_postnet
        for step in range(max(max_steps)):
            hidden = self._prenet(prenet, frame, step, seeds, rates, speaker)
            decoded = model.speecht5.decoder.wrapped_decoder(
                hidden_states=hidden[:, None, :],
                attention_mask=None,
                encoder_hidden_states=encoded,
                encoder_attention_mask=mask,
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
            cache = getattr(decoded, "cache", None) or getattr(decoded, "past_key_values", None)
            last = decoded.last_hidden_state[:, 0]
            spectrum = postnet.feat_out(last).view(rows, self.reduction, self.mel_bins)
            outputs.append(spectrum)
            frame = spectrum[:, -1]
            # One host read per step for the stop decisions (what generate_speech does too).
            stop = (torch.sigmoid(postnet.prob_out(last).float()).sum(dim=-1) >= self.threshold).tolist()
            for r in range(rows):
                if not stopped[r] and (stop[r] or step + 1 >= max_steps[r]):
                    stopped[r] = step + 1
            if all(stopped):
                break
        frames = torch.stack(outputs, dim=1).flatten(1, 2)  # (rows, steps * reduction, mel)
        return [frames[r, : stopped[r] * self.reduction] for r in range(rows)]

    def _prenet(
        self,
        prenet: Any,
        frame: torch.Tensor,
        step: int,
        seeds: torch.Tensor,
        rates: torch.Tensor,
        speaker: torch.Tensor,
    ) -> torch.Tensor:
        """The decoder prenet on the newest frame only, with per-row hashed dropout masks.

        ``generate_speech`` reruns the prenet over the whole output sequence each step and keeps the last
        position; the earlier positions' fresh dropout never reaches the output, so computing the last
        frame alone (at its position) is the same distribution for a fraction of the work.
        """
        hidden = frame
        keep = (1.0 - rates)[:, None]
        for i, layer in enumerate(prenet.layers):
            hidden = nn.functional.relu(layer(hidden))
            draws = seeded_uniform(seeds, _PRENET_STREAM + step * 16 + i, hidden.shape[1])
            hidden = torch.where(draws < keep, hidden / keep.to(hidden.dtype), torch.zeros_like(hidden))
        hidden = prenet.final_layer(hidden)
        positions = prenet.encode_positions
        hidden = hidden + positions.alpha * positions.pe[0, step].to(hidden.dtype)
        hidden = torch.cat([hidden, speaker], dim=-1)
        return nn.functional.relu(prenet.speaker_embeds_layer(hidden))

    # ------------------------------------------------------------------ postnet and vocoder

    def _postnet_and_speed(self, spectrum: torch.Tensor, speed: float) -> torch.Tensor:
        mel: torch.Tensor = self.model.speech_decoder_postnet.postnet(spectrum[None])[0].float()
        if speed != 1.0:
            frames = max(1, round(mel.shape[0] / speed))
            mel = nn.functional.interpolate(mel.T[None], size=frames, mode="linear", align_corners=True)[0].T
        return mel

    def _vocode(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(rows, frames, mel) → (rows, frames * hop) through the vocoder's modules (masked if asked)."""
        voc = self.vocoder
        if voc.config.normalize_before:
            mel = (mel - voc.mean) / voc.scale
        features = mel.transpose(1, 2)
        if mask is not None:
            features = features * mask  # normalisation moved the padding off zero: put it back
        if self._vocoder_2d:
            features = as_2d(features)
            mask = None if mask is None else as_2d(mask)
        hidden = voc.conv_pre(features)
        hidden = hifigan_body(voc, hidden, mask, voc.config.upsample_rates, voc.config.leaky_relu_slope)
        out = torch.tanh_(voc.conv_post(hidden))
        return (from_2d(out) if self._vocoder_2d else out).squeeze(1)

    def _vocode_batch(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        lengths = [m.shape[0] for m in mels]
        width = max(lengths)
        batch = mels[0].new_zeros(len(mels), width, self.mel_bins)
        mask = mels[0].new_zeros(len(mels), 1, width)
        for r, mel in enumerate(mels):
            batch[r, : lengths[r]] = mel
            mask[r, 0, : lengths[r]] = 1.0
        waves = self._vocode(batch, mask)
        return [waves[r, : lengths[r] * self.hop] for r in range(len(mels))]
