"""What every backend does the same way on its device: choosing the precision and running one batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from inference.backends.cuda_memory import release_if_oversized
from inference.errors import ModelLoadError

__all__ = ["DTYPES", "run_batch", "torch_dtype"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
T = TypeVar("T")
R = TypeVar("R")


def torch_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for CHORUS_DTYPE, refusing half precision off CUDA (the CPU path runs fp32)."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype != "fp32" and device.type != "cuda":
        raise ModelLoadError(f"dtype {dtype} needs a CUDA device; the CPU path runs fp32")
    return DTYPES[dtype]


def run_batch(device: torch.device, run: Callable[[Sequence[T]], list[R]], jobs: Sequence[T]) -> list[R]:
    """``run(jobs)``; on CUDA out-of-memory the cache goes back before the batcher retries with fewer rows,
    and after every batch an oversized cache reserve is handed back."""
    if not jobs:
        return []
    try:
        return run(jobs)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise
    finally:
        release_if_oversized(device)
