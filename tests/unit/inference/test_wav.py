from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from inference.audio import float_to_pcm16, wav_bytes, wav_header
from inference.audio.formats import encode_audio


def test_wav_bytes_parse_back_with_the_wave_module() -> None:
    audio = np.sin(np.linspace(0, 40 * np.pi, 2205, dtype=np.float32)) * 0.5
    data = wav_bytes(audio, 22050)
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 22050
        assert wav.getnframes() == 2205
        frames = np.frombuffer(wav.readframes(2205), dtype="<i2")
    np.testing.assert_allclose(frames / 32767.0, audio, atol=1 / 32767)


def test_samples_outside_full_scale_are_clipped() -> None:
    pcm = np.frombuffer(float_to_pcm16(np.array([-3.0, -1.0, 0.0, 1.0, 7.0])), dtype="<i2")
    assert pcm.tolist() == [-32767, -32767, 0, 32767, 32767]


def test_empty_audio_is_a_valid_empty_wav() -> None:
    with wave.open(io.BytesIO(wav_bytes(np.zeros(0, dtype=np.float32), 16000))) as wav:
        assert wav.getnframes() == 0


def test_streaming_header_marks_sizes_unknown() -> None:
    header = wav_header(24000, None)
    assert len(header) == 44
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF


@pytest.mark.parametrize(("rate", "size"), [(0, 0), (16000, -2), (16000, 3)])
def test_header_refuses_impossible_values(rate: int, size: int) -> None:
    with pytest.raises(ValueError, match="must"):
        wav_header(rate, size)


def test_nan_becomes_silence_and_infinities_full_scale() -> None:
    pcm = np.frombuffer(float_to_pcm16(np.array([np.nan, 0.5, np.inf, -np.inf, np.nan], np.float32)), dtype="<i2")
    assert pcm.tolist() == [0, 16384, 32767, -32767, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wav_and_raw_pcm_from_one_chunk_or_several_are_the_same_samples(dtype: type) -> None:
    audio = (np.sin(np.linspace(0, 60 * np.pi, 3000)) * 0.7).astype(dtype)
    whole = wav_bytes(audio, 16000)
    assert encode_audio([audio.astype(np.float32)], "wav", 16000)[0] == whole
    assert encode_audio([audio[:1000].astype(np.float32), audio[1000:].astype(np.float32)], "wav", 16000)[0] == whole
    assert encode_audio([audio.astype(np.float32)], "pcm", 16000) == (whole[44:], 16000)
    assert encode_audio([], "wav", 16000)[0] == wav_bytes(np.zeros(0, np.float32), 16000)
