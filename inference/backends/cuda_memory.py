"""Give CUDA memory back after an oversized batch.

PyTorch's caching allocator keeps the peak of the largest batch reserved for the life of the process.
After a rare huge batch that is memory no other model (or process) on the GPU can use, and a source of
fragmentation. After each batch, when the reserve is both large and mostly idle, it is handed back.
The check reads two allocator counters: no device synchronisation.
"""

from __future__ import annotations

import torch

__all__ = ["release_if_oversized"]

#: Hand the cache back when it exceeds this ...
MIN_RESERVED_BYTES = 1 << 30
#: ... and is more than this many times what live tensors hold after the batch.
IDLE_RATIO = 2.0


def release_if_oversized(device: torch.device) -> bool:
    """``torch.cuda.empty_cache()`` when the reserve is large and mostly idle; True when it did."""
    if device.type != "cuda":
        return False
    reserved = torch.cuda.memory_reserved(device)
    allocated = torch.cuda.memory_allocated(device)
    if reserved < MIN_RESERVED_BYTES or reserved < IDLE_RATIO * allocated:
        return False
    torch.cuda.empty_cache()
    return True
