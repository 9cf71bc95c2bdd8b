"""16-bit PCM mono WAV encoding, written by hand so that streamed headers are possible too."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

_UNKNOWN_SIZE = 0xFFFFFFFF


def pcm16(audio: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] (clipped) as little-endian signed 16-bit PCM samples (a new array)."""
    # One float32 buffer, worked on in place (np.nan_to_num and a chain of copies cost 1.5x as much).
    # Clipped first (+-inf too, and in the input's own precision: a float64 1e300 would overflow a float32).
    audio = np.asarray(audio)
    scaled: npt.NDArray[np.float32] = (
        np.clip(audio, -1.0, 1.0, dtype=np.float32)
        if audio.dtype == np.float32
        else np.clip(audio, -1.0, 1.0).astype(np.float32)
    )
    np.multiply(scaled, 32767.0, out=scaled)
    np.rint(scaled, out=scaled)
    # NaN (a diverged model) becomes silence, not full scale. Clipped samples add up to a finite sum unless
    # one is NaN, and the sum reads the buffer once where a mask of every sample would cost twice as much.
    if np.isnan(np.add.reduce(scaled)):
        np.copyto(scaled, 0.0, where=np.isnan(scaled))
    return scaled.astype("<i2")


def float_to_pcm16(audio: npt.NDArray[np.floating]) -> bytes:
    """Convert float samples in [-1, 1] (clipped) to little-endian signed 16-bit PCM bytes."""
    return pcm16(audio).tobytes()


def wav_header(sample_rate_hz: int, data_bytes: int | None) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM.

    ``data_bytes=None`` writes 0xFFFFFFFF for the RIFF and data sizes, the convention for a stream
    whose length is not known yet.
    """
    if sample_rate_hz <= 0:
        raise ValueError("sample rate must be positive")
    channels, bits = 1, 16
    block_align = channels * bits // 8
    if data_bytes is None:
        riff_size = data_size = _UNKNOWN_SIZE
    else:
        if data_bytes < 0 or data_bytes % block_align:
            raise ValueError("data size must be a non-negative whole number of samples")
        data_size = data_bytes
        riff_size = 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate_hz, sample_rate_hz * block_align, block_align, bits)
        + b"data"
        + struct.pack("<I", data_size)
    )


def wav_bytes(audio: npt.NDArray[np.floating], sample_rate_hz: int) -> bytes:
    """A complete WAV file (header with exact sizes, then the samples)."""
    samples = pcm16(audio)
    # One copy into the file: the samples go in through their buffer, not through a bytes object of their own.
    return b"".join((wav_header(sample_rate_hz, samples.nbytes), samples.data))
