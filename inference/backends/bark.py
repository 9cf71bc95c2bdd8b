"""Bark (``suno/bark``, ``suno/bark-small``) through ``transformers``' ``BarkModel.generate``, batched by voice.

Bark generates in three sampled stages (semantic, coarse, fine tokens) and decodes with EnCodec.
``generate`` takes one history prompt per call, so a batch holds one voice preset; ``temperature`` sets
the semantic and coarse sampling temperatures (0: greedy, deterministic; unset: the checkpoint's own).
Every stage samples from the one global generator, so a row's audio depends on its batch-mates: a
request that names a ``seed`` therefore runs in a batch of its own, seeded, and gives the same audio
every time; requests without one batch freely. ``speed`` cannot be honoured (Bark has no rate control
that keeps the pitch) and is refused unless 1.

Voices are presets (``semantic_prompt``, ``coarse_prompt``, ``fine_prompt`` arrays) as ``*.npz`` files in
the checkpoint's ``voices/`` folder, or the ones the checkpoint's ``speaker_embeddings_path.json`` lists
(``suno/bark``'s ``v2/en_speaker_6`` ...); ``random`` (the default) uses none: a random speaker per row.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from inference.backends.base import ModelInfo, SynthesisJob, SynthesisParams
from inference.backends.device import batch_generator, freeze, run_batch, torch_dtype
from inference.errors import InvalidTextError, ModelLoadError, UnknownVoiceError, UnsupportedParameterError

__all__ = ["BarkBackend"]

log = logging.getLogger(__name__)

RANDOM_VOICE = "random"
MIN_SEMANTIC_TOKENS = 10
_PROMPT_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")


def _load_presets(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Voice presets: ``voices/*.npz``, then those ``speaker_embeddings_path.json`` names (as BarkProcessor)."""
    files: dict[str, Path] = {p.stem: p for p in sorted((path / "voices").glob("*.npz"))}
    listing = path / "speaker_embeddings_path.json"
    if listing.is_file():
        try:
            entries = json.loads(listing.read_text())
        except ValueError as exc:
            raise ModelLoadError(f"{listing}: not JSON: {exc}") from exc
        for name, parts in entries.items():
            if name == "repo_or_path" or not isinstance(parts, dict):
                continue
            files_of = [path / str(parts.get(key, "")) for key in _PROMPT_KEYS]
            if all(p.is_file() for p in files_of):
                files.setdefault(name, path)  # marker: three .npy files, read below
    presets: dict[str, dict[str, torch.Tensor]] = {}
    for name, source in files.items():
        try:
            if source.suffix == ".npz":
                with np.load(source, allow_pickle=False) as data:
                    arrays = {key: np.asarray(data[key]) for key in _PROMPT_KEYS}
            else:
                parts = json.loads(listing.read_text())[name]
                arrays = {key: np.asarray(np.load(path / parts[key], allow_pickle=False)) for key in _PROMPT_KEYS}
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"voice preset {name!r} ({source}): {exc}") from exc
        presets[name] = {key: torch.from_numpy(np.asarray(value, dtype=np.int64)) for key, value in arrays.items()}
    return presets


def _as_dicts(generation_config: Any) -> None:
    """``BarkModel.generate`` wants the stage configs as dicts; ``from_pretrained`` may hand back objects."""
    for attr in ("semantic_config", "coarse_acoustics_config", "fine_acoustics_config"):
        value = getattr(generation_config, attr, None)
        if value is not None and not isinstance(value, dict):
            setattr(generation_config, attr, value.to_dict())


class BarkBackend:
    """``BarkModel`` behind the ``Backend`` protocol."""

    def __init__(
        self, model: Any, tokenizer: Any, presets: dict[str, dict[str, torch.Tensor]], *, name: str,
        device: torch.device, dtype: str = "fp32",
    ) -> None:  # fmt: skip
        half = torch_dtype(dtype, device)
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.presets = {name: {k: v.to(device) for k, v in preset.items()} for name, preset in presets.items()}
        _as_dicts(model.generation_config)
        semantic = model.generation_config.semantic_config
        self.max_tokens = int(semantic.get("max_input_semantic_length", 256))
        self._lock = threading.Lock()
        voices = (RANDOM_VOICE, *sorted(presets))
        self._info = ModelInfo(
            name=name,
            family="bark",
            sample_rate_hz=int(model.generation_config.sample_rate),
            languages=("en",),
            voices=voices,
            default_voice=RANDOM_VOICE,
            device=str(device),
            dtype=dtype,
        )
        freeze(model, device, half)

    @classmethod
    def from_pretrained(
        cls, path: str, *, name: str | None = None, device: str = "auto", dtype: str = "fp32"
    ) -> BarkBackend:
        from transformers import AutoTokenizer, BarkModel

        from inference.backends.vits import resolve_device

        try:
            model = BarkModel.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load Bark from {path}: {exc}") from exc
        presets = _load_presets(Path(path)) if Path(path).is_dir() else {}
        return cls(model, tokenizer, presets, name=name or path, device=resolve_device(device), dtype=dtype)

    # ------------------------------------------------------------------ protocol

    @property
    def info(self) -> ModelInfo:
        return self._info

    def unsayable(self, text: str) -> str:
        return ""  # Bark reads any text its multilingual BERT vocabulary covers, and improvises the rest

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        voice = params.voice or RANDOM_VOICE
        if voice not in self._info.voices:
            raise UnknownVoiceError(voice, list(self._info.voices))
        if params.speed != 1.0:
            raise UnsupportedParameterError("speed", "bark has no speaking-rate control; send speed 1.0")
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids or not any(ch.isalnum() for ch in text):
            raise InvalidTextError
        if len(ids) > self.max_tokens:
            raise InvalidTextError(f"a sentence is {len(ids)} tokens long; bark reads at most {self.max_tokens}")
        return [SynthesisJob(token_ids=np.asarray(ids, dtype=np.int64), params=params)]

    def batch_key(self, job: SynthesisJob) -> Hashable:
        params = job.params
        # One preset and one temperature per generate call; a seeded request alone (see the module docs).
        return (params.voice or RANDOM_VOICE, params.temperature, params.seed if params.seeded else None)

    def warmup(self) -> None:
        self.synthesize(self.prepare("Hello.", SynthesisParams(seed=1, seeded=True)))

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        return run_batch(self.device, self._synthesize, jobs)

    @torch.inference_mode()
    def _synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        rows = len(jobs)
        pad = int(self.tokenizer.pad_token_id or 0)
        ids = torch.full((rows, self.max_tokens), pad, dtype=torch.long)
        mask = torch.zeros((rows, self.max_tokens), dtype=torch.long)
        for r, job in enumerate(jobs):
            ids[r, : job.length] = torch.from_numpy(job.token_ids)
            mask[r, : job.length] = 1
        first = jobs[0].params
        voice = first.voice or RANDOM_VOICE
        # At least ~0.2 s of speech: EnCodec's decoder cannot take a handful of frames (its first
        # convolution is wider), and a row that stopped at once would fail the whole batch.
        options: dict[str, Any] = {"return_output_lengths": True, "semantic_min_new_tokens": MIN_SEMANTIC_TOKENS}
        if voice != RANDOM_VOICE:
            options["history_prompt"] = self.presets[voice]
        # Bark is meant to sample (its stage configs may still say do_sample=false): sample unless the
        # request asks for temperature 0, at the request's temperature or the checkpoint's own.
        greedy = first.temperature is not None and first.temperature <= 0.0
        for stage in ("semantic", "coarse"):
            options[f"{stage}_do_sample"] = not greedy
            if first.temperature is not None and not greedy:
                options[f"{stage}_temperature"] = first.temperature
        with batch_generator(jobs, self.device):  # a seeded request (always alone) repeats
            audio, lengths = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **options
            )
        return [audio[r, : int(lengths[r])].float().cpu().numpy().reshape(-1) for r in range(rows)]
