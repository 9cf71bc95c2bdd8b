"""What both peers share: the same transformers model Chorus serves, loaded the plain way.

The embedded Piper voice is converted (cached) to a transformers VITS checkpoint; its HiFi-GAN uses
ResBlock2, which stock ``VitsModel`` lacks, so the class is Chorus's ``ChorusVitsModel`` (a
``VitsModel`` subclass that only adds that block). Everything else is what a typical server does: the
stock ``forward``, weight norm left in, fp32, no batching tricks, WAV written with soundfile. On a machine
with CUDA the model runs there (``.to("cuda")``, as any server with a GPU would), else on the CPU.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch


def device() -> torch.device:
    """Where the peers run the model: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model: str | None) -> tuple[Any, Any, int]:
    """(model, text frontend, sample rate) for a checkpoint folder, a Piper .onnx, or the embedded voice,
    the model in fp32 on ``device()`` (a checkpoint stored in fp16, as the GPU bundle's, is cast up)."""
    from inference.backends import ModelSpec, resolve_model_path
    from inference.backends.text import load_frontend
    from inference.backends.vits import ChorusVitsModel

    cache = Path(os.environ.get("CHORUS_CACHE_DIR", Path.home() / ".cache" / "chorus"))
    source, _ = resolve_model_path(ModelSpec(model=model, cache_dir=cache))
    vits = ChorusVitsModel.from_pretrained(source).float().to(device()).eval()
    folder = Path(source) if Path(source).is_dir() else source
    return vits, load_frontend(folder, vits.config), int(vits.config.sampling_rate)


def token_ids(frontend: Any, text: str) -> np.ndarray:
    """The whole text as one id sequence (the sentences' ids one after another)."""
    return np.concatenate(frontend.encode(text))


def wav(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@torch.inference_mode()
def synthesize_one(vits: Any, ids: np.ndarray) -> np.ndarray:
    out = vits(input_ids=torch.from_numpy(ids)[None, :].to(vits.device))
    return out.waveform[0].cpu().numpy()


@torch.inference_mode()
def synthesize_batch(vits: Any, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """One padded forward pass with an attention mask; each row trimmed to its own length."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.from_numpy(seq)
        mask[row, : len(seq)] = 1
    out = vits(input_ids=ids.to(vits.device), attention_mask=mask.to(vits.device))
    lengths = out.sequence_lengths.tolist()
    waveform = out.waveform.cpu()
    return [waveform[row, : int(lengths[row])].numpy() for row in range(len(sequences))]
