"""When the CUDA cache is handed back (the allocator's counters are stubbed: no GPU here)."""

from __future__ import annotations

import pytest
import torch

from inference.backends import cuda_memory
from inference.backends.cuda_memory import release_if_oversized

GIB = 1 << 30


@pytest.mark.parametrize(
    ("reserved", "allocated", "released"),
    [
        (8 * GIB, 1 * GIB, True),  # a huge batch left 8 GiB reserved for 1 GiB of weights
        (8 * GIB, 5 * GIB, False),  # most of the reserve is in use
        (GIB // 2, 0, False),  # too small to bother
    ],
)
def test_the_cache_is_released_only_when_large_and_idle(
    monkeypatch: pytest.MonkeyPatch, reserved: int, allocated: int, released: bool
) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(cuda_memory.torch.cuda, "memory_reserved", lambda device: reserved)
    monkeypatch.setattr(cuda_memory.torch.cuda, "memory_allocated", lambda device: allocated)
    monkeypatch.setattr(cuda_memory.torch.cuda, "empty_cache", lambda: emptied.append(True))
    assert release_if_oversized(torch.device("cuda", 0)) is released
    assert emptied == ([True] if released else [])


def test_cpu_is_left_alone() -> None:
    assert release_if_oversized(torch.device("cpu")) is False
