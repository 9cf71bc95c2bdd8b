"""Request and response bodies. Constraints live here so bad input is refused before a handler runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

__all__ = [
    "MAX_SEED",
    "ErrorBody",
    "GenerateRequest",
    "Health",
    "OpenAIErrorBody",
    "TextFormat",
    "audio_spec",
    "error_specs",
]

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
#: "markdown" (default): Markdown is read as a person reads it aloud (no "asterisk", no link addresses), and a
#: document whose root is <speak> is SSML; "ssml": SSML; "plain": every character as written.
TextFormat = Annotated[
    Literal["markdown", "plain", "ssml"],
    msgspec.Meta(
        description="markdown (default): Markdown read as a person reads it aloud, and a <speak> document as "
        "SSML; ssml: SSML (break, p, s, prosody rate, say-as characters, sub); plain: every character as written"
    ),
]
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
    response_format: Annotated[
        str, msgspec.Meta(max_length=10, description="wav, pcm, flac, mp3, opus, aac, mulaw, alaw")
    ] = "wav"
    sample_rate: SampleRate | None = None
    text_format: TextFormat = "markdown"
    #: ``word``: the answer is JSON, the audio base64-encoded beside each word's start and end (not streamed).
    timestamps: Annotated[
        Literal["none", "word"],
        msgspec.Meta(description="word: answer JSON with the audio (base64) and each word's start and end"),
    ] = "none"


class Health(msgspec.Struct, omit_defaults=True):
    """GET /ping body when ready (200) or failed (503); 204 while loading has no body."""

    status: str
    detail: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error outside ``/v1``: Litestar's shape plus the request id."""

    status_code: int
    detail: str
    request_id: str | None = None
    extra: list[dict[str, object]] | dict[str, object] | None = None


class OpenAIErrorDetail(msgspec.Struct):
    """The inner object of an OpenAI error."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(msgspec.Struct):
    """Every error under ``/v1``, as OpenAI shapes them."""

    error: OpenAIErrorDetail


def error_specs(container: type, *statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the error statuses a route can answer."""
    return {
        status: ResponseSpec(data_container=container, description=_ERROR_DESCRIPTIONS[status], generate_examples=False)
        for status in statuses
    }


def audio_spec(media_type: str, description: str) -> ResponseSpec:
    """The OpenAPI entry of a binary audio answer."""
    return ResponseSpec(data_container=bytes, media_type=media_type, description=description, generate_examples=False)


_ERROR_DESCRIPTIONS = {
    400: "Malformed body or a value out of range",
    401: "API key missing or invalid",
    404: "Unknown model",
    413: "Body over 1 MiB",
    415: "Compressed body (Content-Encoding): send it uncompressed",
    422: "Well-formed but not servable: empty text, unknown language, voice or format",
    429: "Queue full; see Retry-After",
    499: "Client closed the connection",
    500: "Synthesis failed for this request",
    503: "Loading, failed, or shutting down; see Retry-After",
    504: "Deadline passed while queued",
}


def _timed_audio_schema() -> Schema:
    """The JSON answer of ``/generate`` (and a queue job) with ``timestamps: "word"``."""
    word = Schema(
        type=OpenAPIType.OBJECT,
        required=["word", "start_s", "end_s"],
        properties={
            "word": Schema(type=OpenAPIType.STRING),
            "start_s": Schema(type=OpenAPIType.NUMBER),
            "end_s": Schema(type=OpenAPIType.NUMBER),
        },
    )
    fields = {
        "audio": Schema(type=OpenAPIType.STRING, description="the audio file, base64"),
        "format": Schema(type=OpenAPIType.STRING),
        "sample_rate": Schema(type=OpenAPIType.INTEGER),
        "duration_s": Schema(type=OpenAPIType.NUMBER),
        "seed": Schema(type=OpenAPIType.INTEGER),
        "batch_size": Schema(type=OpenAPIType.INTEGER),
        "words": Schema(type=OpenAPIType.ARRAY, items=word),
    }
    return Schema(type=OpenAPIType.OBJECT, required=list(fields), properties=fields)  # type: ignore[arg-type]


def answers_also(*media_types: str, timed: bool = False) -> type[Operation]:
    """An audio route's OpenAPI operation whose 200 lists every media type it can answer with, beside the
    one its ResponseSpec names (a ResponseSpec holds one): ``media_types`` as binary, and with ``timed`` the
    JSON of audio and word times."""

    @dataclass
    class AlsoAnswers(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if not isinstance(ok, OpenAPIResponse) or ok.content is None:
                return
            for media in media_types:
                ok.content.setdefault(
                    media, OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY))
                )
            if timed:
                ok.content["application/json"] = OpenAPIMediaType(schema=_timed_audio_schema())

    return AlsoAnswers
