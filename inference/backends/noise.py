"""Counter-based noise: every element a hash of (row seed, stream, position), never of the batch.

A row's random numbers cannot depend on its batch-mates, on padding or on generator state, so a seeded
request gives the same audio alone or batched; one vectorised pass serves a whole batch with no host
round trips.
"""

from __future__ import annotations

import math

import torch

__all__ = ["seeded_normal", "seeded_uniform"]

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) on int64 tensors holding values below 2**32.

    Multipliers stay below 2**31 so no product overflows int64; values stay non-negative, so the
    arithmetic right shift is a logical one.
    """
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK32
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _MASK32
    return x ^ (x >> 16)


def seeded_normal(seeds: torch.Tensor, stream: int, channels: int, length: int) -> torch.Tensor:
    """Standard normal noise of shape (rows, channels, length), element (r, c, t) a function of
    (seeds[r], stream, c, t) only.

    A counter-based generator: one vectorised pass for the whole batch, no per-row generator state, no
    host round trips, and a row's noise cannot depend on its batch-mates or on padding. Two 32-bit
    hashes per element feed a Box-Muller transform.
    """
    device = seeds.device
    row = _mix32((seeds & _MASK32) ^ ((stream * 0x9E3779B9) & _MASK32))
    row = _mix32(row ^ ((seeds >> 32) & _MASK32))
    channel = _mix32(row[:, None] ^ torch.arange(channels, device=device)[None, :])
    position = (torch.arange(length, device=device) * 0x27D4EB2F) & _MASK32
    first = _mix32(channel[:, :, None] ^ position[None, None, :])
    second = _mix32(first ^ 0x68E31DA4)
    scale = 1.0 / 4294967296.0
    u1 = (first.to(torch.float32) + 1.0) * scale  # (0, 1]: log stays finite
    u2 = second.to(torch.float32) * scale
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def seeded_uniform(seeds: torch.Tensor, stream: int, channels: int) -> torch.Tensor:
    """Uniform [0, 1) numbers of shape (rows, channels), element (r, c) a function of (seeds[r], stream, c)."""
    device = seeds.device
    row = _mix32((seeds & _MASK32) ^ ((stream * 0x9E3779B9) & _MASK32))
    row = _mix32(row ^ ((seeds >> 32) & _MASK32))
    values = _mix32(_mix32(row[:, None] ^ torch.arange(channels, device=device)[None, :]) ^ 0x5BD1E995)
    return values.to(torch.float32) * (1.0 / 4294967296.0)
