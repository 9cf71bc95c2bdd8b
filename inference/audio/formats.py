"""Output formats, whole or streamed: WAV, raw PCM and G.711 (mu-law, A-law) by hand, FLAC/MP3/Opus/AAC
through PyAV (FFmpeg).

Every format is 16-bit mono at its source. A streaming encoder takes float chunks as they are
synthesized and returns the bytes ready to send after each one; resampling (soxr) happens inside, with
state carried across chunks so joins stay seamless.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inference.audio.g711 import pcm16_to_alaw, pcm16_to_mulaw
from inference.audio.wav import float_to_pcm16, pcm16, wav_header

__all__ = ["FORMATS", "AudioFormat", "StreamEncoder", "encode_audio", "resample"]

AudioFormat = Literal["wav", "pcm", "flac", "mp3", "opus", "aac", "mulaw", "alaw"]


@dataclass(frozen=True, slots=True)
class _Spec:
    media_type: str
    container: str | None  # PyAV muxer; None for the formats written by hand
    codec: str | None
    rates_hz: tuple[int, ...] | None = None  # rates the codec accepts; None = any


FORMATS: dict[str, _Spec] = {
    "wav": _Spec("audio/wav", None, None),
    "pcm": _Spec("audio/pcm", None, None),
    "flac": _Spec("audio/flac", "flac", "flac"),
    "mp3": _Spec("audio/mpeg", "mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": _Spec("audio/ogg", "ogg", "libopus", (8000, 12000, 16000, 24000, 48000)),
    "aac": _Spec("audio/aac", "adts", "aac", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    # G.711, raw, one byte a sample, always 8 kHz: what telephone networks (Twilio, SIP) carry.
    "mulaw": _Spec("audio/basic", None, None, (8000,)),
    "alaw": _Spec("audio/x-alaw-basic", None, None, (8000,)),
}
_COMPANDERS = {"mulaw": pcm16_to_mulaw, "alaw": pcm16_to_alaw}


def media_type(fmt: str) -> str:
    """The Content-Type for a format."""
    return FORMATS[fmt].media_type


def codec_rate(fmt: str, wanted_hz: int) -> int:
    """The rate a format will carry: the wanted one if its codec accepts it, else the next one up."""
    rates = FORMATS[fmt].rates_hz
    if rates is None or wanted_hz in rates:
        return wanted_hz
    higher = [r for r in rates if r >= wanted_hz]
    return higher[0] if higher else rates[-1]


def resample(audio: npt.NDArray[np.float32], from_hz: int, to_hz: int) -> npt.NDArray[np.float32]:
    """Whole-signal resampling with soxr (high quality)."""
    if from_hz == to_hz or audio.size == 0:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, from_hz, to_hz, quality="HQ"), dtype=np.float32)


class _Sink:
    """A write-only file for PyAV: keeps what the muxer wrote until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class StreamEncoder:
    """Encode float chunks in order; ``encode`` returns what can be sent now, ``finish`` the rest."""

    def __init__(self, fmt: str, source_rate_hz: int, target_rate_hz: int | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unsupported format {fmt!r}")
        self.format = fmt
        self.source_rate_hz = source_rate_hz
        self.rate_hz = codec_rate(fmt, target_rate_hz or source_rate_hz)
        self._resampler: Any = None
        if self.rate_hz != source_rate_hz:
            import soxr

            self._resampler = soxr.ResampleStream(source_rate_hz, self.rate_hz, 1, dtype="float32", quality="HQ")
        self._started = False
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        spec = FORMATS[fmt]
        if spec.container is not None:
            import av

            self._av = av
            self._container = av.open(self._sink, mode="w", format=spec.container)
            self._stream = self._container.add_stream(spec.codec, rate=self.rate_hz, layout="mono")

    def _prologue(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return wav_header(self.rate_hz, None) if self.format == "wav" else b""

    def _encode_pcm(self, audio: npt.NDArray[np.float32]) -> bytes:
        pcm = float_to_pcm16(audio)
        if self.format in _COMPANDERS:
            return _COMPANDERS[self.format](pcm)
        if self._container is None:
            return pcm
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.rate_hz
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def encode(self, audio: npt.NDArray[np.float32]) -> bytes:
        """Bytes to send after this chunk (possibly empty: some codecs buffer a little)."""
        head = self._prologue()
        if self._resampler is not None:
            audio = np.asarray(self._resampler.resample_chunk(audio, last=False), dtype=np.float32)
        return head + self._encode_pcm(audio)

    def finish(self) -> bytes:
        """Flush the resampler and the codec; the container's trailer, if any."""
        head = self._prologue()
        tail = b""
        if self._resampler is not None:
            tail = self._encode_pcm(
                np.asarray(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
            )
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            tail += self._sink.take()
        return head + tail


def encode_audio(
    chunks: Iterable[npt.NDArray[np.float32]], fmt: str, source_rate_hz: int, target_rate_hz: int | None = None
) -> tuple[bytes, int]:
    """A complete file (WAV with exact sizes) from the chunks; returns (bytes, the rate it carries)."""
    if fmt in ("wav", "pcm"):
        rate = target_rate_hz or source_rate_hz
        parts = list(chunks)
        # One sentence (most requests) is converted as it is: its copy into one array would be wasted.
        audio = (parts[0] if len(parts) == 1 else np.concatenate(parts)) if parts else np.zeros(0, np.float32)
        samples = pcm16(resample(audio, source_rate_hz, rate))
        if fmt == "pcm":
            return samples.tobytes(), rate
        return b"".join((wav_header(rate, samples.nbytes), samples.data)), rate
    encoder = StreamEncoder(fmt, source_rate_hz, target_rate_hz)
    out = io.BytesIO()
    for chunk in chunks:
        out.write(encoder.encode(chunk))
    out.write(encoder.finish())
    return out.getvalue(), encoder.rate_hz
