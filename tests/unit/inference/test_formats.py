"""Every output format decodes back (PyAV/FFmpeg) to the samples' duration, whole and streamed."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from inference.audio.formats import FORMATS, StreamEncoder, codec_rate, encode_audio
from tests.helpers import decoded_seconds

RATE = 22050
# Encoders add priming and padding: AAC ~2048 samples, MP3 ~1152 + a frame. Allow 0.2 s.
PADDING_S = 0.2


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_whole_files_decode_to_their_duration(fmt: str) -> None:
    chunks = [tone(0.5), tone(1.0), tone(0.25)]
    expected = sum(len(c) for c in chunks) / RATE
    data, rate = encode_audio(chunks, fmt, RATE)
    assert rate == codec_rate(fmt, RATE)
    assert expected - 0.002 <= decoded_seconds(data, fmt, rate) <= expected + PADDING_S


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_streamed_bytes_decode_to_their_duration(fmt: str) -> None:
    encoder = StreamEncoder(fmt, RATE)
    chunks = [tone(0.5), tone(1.0), tone(0.25)]
    expected = sum(len(c) for c in chunks) / RATE
    parts = [encoder.encode(np.zeros(0, np.float32))]
    parts += [encoder.encode(chunk) for chunk in chunks]
    parts.append(encoder.finish())
    data = b"".join(parts)
    if fmt == "wav":
        assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
        assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
        assert len(data) == 44 + 2 * sum(len(c) for c in chunks)
    else:
        assert expected - 0.002 <= decoded_seconds(data, fmt, encoder.rate_hz) <= expected + PADDING_S


def test_streamed_pcm_and_wav_bytes_arrive_with_each_chunk() -> None:
    encoder = StreamEncoder("pcm", RATE)
    assert len(encoder.encode(tone(0.1))) == 2 * int(0.1 * RATE)


@pytest.mark.parametrize("target", [8000, 16000, 24000, 44100, 48000])
def test_resampling_keeps_the_duration(target: int) -> None:
    data, rate = encode_audio([tone(1.0)], "wav", RATE, target)
    assert rate == target
    seconds = (len(data) - 44) / 2 / target
    assert abs(seconds - 1.0) < 0.01


def test_streamed_resampling_joins_chunks_without_loss() -> None:
    encoder = StreamEncoder("pcm", RATE, 24000)
    data = b"".join([encoder.encode(tone(0.3)) for _ in range(5)] + [encoder.finish()])
    assert abs(len(data) / 2 / 24000 - 1.5) < 0.01


def test_opus_runs_at_a_rate_its_codec_accepts() -> None:
    assert codec_rate("opus", 22050) == 24000
    assert codec_rate("mp3", 22050) == 22050
    assert codec_rate("wav", 22050) == 22050
