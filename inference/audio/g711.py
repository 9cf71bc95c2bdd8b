"""G.711 companding (ITU-T G.711): 16-bit PCM to 8-bit mu-law or A-law, what telephone networks carry.

Telephony voice agents (Twilio Media Streams, SIP trunks) want 8 kHz mu-law or A-law bytes. Each law is
a lookup table over all 65,536 sample values, built once with the reference algorithm (the one in Sun's
``g711.c``, which CPython's ``audioop`` also used), so encoding is one indexing pass.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["pcm16_to_alaw", "pcm16_to_mulaw"]

_MULAW_BIAS = 0x21
_MULAW_CLIP = 8159
_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, indexed by its bit pattern read as uint16."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


@functools.cache
def _mulaw_table() -> npt.NDArray[np.uint8]:
    sample = _all_samples() >> 2  # 14-bit
    mask = np.where(sample < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(sample), _MULAW_CLIP) + _MULAW_BIAS
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude, side="left").astype(np.int32)  # 8: beyond the last
    capped = np.minimum(segment, 7)
    value = np.where(segment >= 8, 0x7F, (capped << 4) | ((magnitude >> (capped + 1)) & 0x0F))
    return ((value ^ mask) & 0xFF).astype(np.uint8)


@functools.cache
def _alaw_table() -> npt.NDArray[np.uint8]:
    sample = _all_samples() >> 3  # 13-bit
    mask = np.where(sample >= 0, 0xD5, 0x55)
    magnitude = np.where(sample >= 0, sample, -sample - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left").astype(np.int32)  # 8: beyond the last
    capped = np.minimum(segment, 7)
    low = np.where(segment < 2, magnitude >> 1, magnitude >> capped) & 0x0F
    value = np.where(segment >= 8, 0x7F, (capped << 4) | low)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    """Little-endian 16-bit PCM to G.711 mu-law, one byte per sample."""
    return bytes(_mulaw_table()[np.frombuffer(pcm, dtype="<u2")].tobytes())


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Little-endian 16-bit PCM to G.711 A-law, one byte per sample."""
    return bytes(_alaw_table()[np.frombuffer(pcm, dtype="<u2")].tobytes())
