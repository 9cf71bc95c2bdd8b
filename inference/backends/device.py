"""What every backend does the same way on its device: choosing the precision and running one batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

from inference.backends.base import SynthesisJob
from inference.backends.cuda_memory import release_if_oversized
from inference.errors import ModelLoadError

__all__ = ["DTYPES", "batch_generator", "cpu_has_bf16", "freeze", "run_batch", "torch_dtype"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
T = TypeVar("T")
R = TypeVar("R")


def torch_dtype(dtype: str, device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype:
    """The torch dtype for CHORUS_DTYPE. Off CUDA half precision is refused, except bf16 where the family
    supports it (``cpu_bf16``) and the CPU computes it natively (AVX-512 BF16 / AMX)."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == "fp32" or device.type == "cuda":
        return DTYPES[dtype]
    if dtype == "bf16" and cpu_bf16:
        if not cpu_has_bf16():
            raise ModelLoadError("dtype bf16 on CPU needs AVX-512 BF16 or AMX, which this CPU lacks; use fp32")
        return DTYPES[dtype]
    raise ModelLoadError(f"dtype {dtype} needs a CUDA device on this model family; its CPU path runs fp32")


def cpu_has_bf16() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (else it would emulate it, slower than fp32)."""
    return bool(torch._C._has_mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def run_batch(
    device: torch.device, run: Callable[[Sequence[T]], list[R]], jobs: Sequence[T], *, release: bool = True
) -> list[R]:
    """``run(jobs)``; on CUDA out-of-memory the cache goes back before the batcher retries with fewer rows,
    and after every batch an oversized cache reserve is handed back unless ``release`` is False (CUDA graphs
    keep their memory pool reserved for good: the reserve would look oversized after every batch)."""
    if not jobs:
        return []
    try:
        return run(jobs)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise
    finally:
        if release:
            release_if_oversized(device)


def freeze(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Evaluation mode, on ``device`` in ``dtype``, no gradients."""
    model.eval()
    model.to(device, dtype=dtype)
    for param in model.parameters():
        param.requires_grad_(False)


@contextmanager
def batch_generator(jobs: Sequence[SynthesisJob], device: torch.device) -> Iterator[None]:
    """For families that sample a whole batch from torch's one global generator (Bark, CSM): seed it from
    the batch for the duration, then restore it. A request with a client-chosen seed runs alone (their
    batch keys see to it) and is seeded with exactly that seed, so it repeats."""
    first = jobs[0].params
    seed = first.seed if first.seeded else int(sum(job.params.seed for job in jobs) % (2**63))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
