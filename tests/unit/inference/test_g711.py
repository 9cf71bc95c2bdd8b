"""G.711 mu-law and A-law: exact against the reference algorithm, and through the service."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import pytest

from inference.audio.formats import StreamEncoder, encode_audio
from inference.audio.g711 import pcm16_to_alaw, pcm16_to_mulaw

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")  # Sun's g711.c, in CPython up to 3.12
        except ImportError:
            pytest.skip("audioop (the reference) left CPython in 3.13")


def test_every_sample_value_encodes_as_the_reference_does() -> None:
    audioop = _audioop()
    assert pcm16_to_mulaw(EVERY_SAMPLE) == audioop.lin2ulaw(EVERY_SAMPLE, 2)
    assert pcm16_to_alaw(EVERY_SAMPLE) == audioop.lin2alaw(EVERY_SAMPLE, 2)


@pytest.mark.parametrize(
    ("sample", "mulaw", "alaw"),
    [(0, 0xFF, 0xD5), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (-1, 0x7E, 0x55)],  # -1: 14-bit floor
)
def test_the_code_points_of_the_standard(sample: int, mulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype="<i2").tobytes()
    assert pcm16_to_mulaw(pcm) == bytes([mulaw])
    assert pcm16_to_alaw(pcm) == bytes([alaw])


@pytest.mark.parametrize("fmt", ["mulaw", "alaw"])
def test_telephony_formats_are_8_khz_one_byte_a_sample_whole_or_streamed(fmt: str) -> None:
    audio = (0.5 * np.sin(np.arange(22050, dtype=np.float32) / 7)).astype(np.float32)
    whole, rate = encode_audio([audio], fmt, 22050)
    assert rate == 8000
    assert len(whole) == 8000  # one second, one byte a sample
    encoder = StreamEncoder(fmt, 22050, 16000)  # asked for 16 kHz: G.711 is 8 kHz, always
    streamed = b"".join([encoder.encode(audio[:10000]), encoder.encode(audio[10000:]), encoder.finish()])
    assert encoder.rate_hz == 8000
    assert abs(len(streamed) - 8000) <= 1
    pcm_8k, _ = encode_audio([audio], "pcm", 22050, 8000)
    assert whole == (pcm16_to_mulaw if fmt == "mulaw" else pcm16_to_alaw)(pcm_8k)  # PCM at 8 kHz, companded


@pytest.mark.parametrize("fmt", ["mulaw", "alaw"])
def test_ffmpeg_decodes_it_back_within_the_laws_step(fmt: str) -> None:
    import io

    import av

    x = (np.sin(np.arange(8000) / 5) * np.linspace(0, 32000, 8000)).astype("<i2")
    data = (pcm16_to_mulaw if fmt == "mulaw" else pcm16_to_alaw)(x.tobytes())
    with av.open(io.BytesIO(data), format=fmt, options={"sample_rate": "8000"}) as container:
        y = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)]).astype(np.int32)
    assert len(y) == len(x)
    # Companding keeps a near-constant relative precision: half a step is under 1/32 of the value.
    assert np.all(np.abs(y - x) <= np.abs(x.astype(np.int32)) / 32 + 32)
