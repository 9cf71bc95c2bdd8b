"""Audio encoding: float waveforms to PCM containers."""

from __future__ import annotations

from inference.audio.wav import float_to_pcm16, wav_bytes, wav_header

__all__ = ["float_to_pcm16", "wav_bytes", "wav_header"]
