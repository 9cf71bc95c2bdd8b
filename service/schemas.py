"""Request and response bodies. Constraints live here so bad input is refused before a handler runs."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["MAX_SEED", "GenerateRequest", "Health"]

MAX_SEED = 2**63 - 1

Temperature = Annotated[
    float,
    msgspec.Meta(
        ge=0.0,
        le=2.0,
        description="Scales the model's sampling noise: 0 is deterministic, 1 the model's defaults.",
    ),
]
Speed = Annotated[float, msgspec.Meta(ge=0.25, le=4.0, description="Speaking rate: 2.0 is twice as fast.")]
SampleRate = Annotated[int, msgspec.Meta(ge=8000, le=48000, description="Resample the output (soxr).")]
Seed = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED, description="Same seed, text and parameters: same audio.")]


class GenerateRequest(msgspec.Struct, kw_only=True):
    """POST /generate: the seed API, plus speed, seed and voice."""

    text: Annotated[str, msgspec.Meta(description="What to say.")]
    language: Annotated[str, msgspec.Meta(max_length=35)] = "en"
    temperature: Temperature | None = None
    speed: Speed = 1.0
    seed: Seed | None = None
    voice: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    #: Piper's name for the same thing; ``voice`` wins when both are given.
    speaker: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    #: Stream the audio as each sentence finishes (WAV with unknown sizes, or the chosen format).
    stream: bool = False
    response_format: Annotated[str, msgspec.Meta(max_length=10, description="wav, pcm, flac, mp3, opus, aac")] = "wav"
    sample_rate: SampleRate | None = None


class Health(msgspec.Struct):
    """GET /ping body when ready (200) or failed (503); 204 while loading has no body."""

    status: str
    detail: str | None = None
