"""The OpenAI-compatible speech API under ``/v1``: what the official ``openai`` client calls.

Name rules (documented in the README):
* ``model``: the served model's name, ``chorus``, or one of OpenAI's speech model names (``tts-1``,
  ``tts-1-hd``, ``gpt-4o-mini-tts``) all mean the served model; anything else is refused (404,
  ``model_not_found``) with the list.
* ``voice``: one of the model's own voices; OpenAI's voice names (``alloy``, ``nova``, ...) and
  ``default`` mean the model's default voice; anything else is refused (400, ``voice_not_found``).
* ``instructions`` is accepted and ignored: the served models have no way to follow it.
Errors take OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.exceptions import HTTPException

from inference.audio.formats import FORMATS
from inference.backends.base import ModelInfo, SynthesisParams
from inference.errors import InferenceError, QueueFullError
from inference.speech import SpeechPipeline
from service.elevenlabs import ELEVENLABS_HTTP_ROUTES, elevenlabs_multi_stream_input, elevenlabs_stream_input
from service.errors import client_error, inference_status, request_id
from service.live import speech_stream_input
from service.schemas import OpenAIErrorBody, TextFormat, answers_also, audio_spec, error_specs
from service.state import ServiceState
from service.synthesis import audio_response, check_format, check_timestamps, clean_text, random_seed, ready_pipeline

__all__ = ["OPENAI_MODEL_ALIASES", "OPENAI_VOICES", "openai_route_error", "openai_router"]

OPENAI_MODEL_ALIASES = ("chorus", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
DEFAULT_VOICE = "default"
OPENAI_PCM_RATE_HZ = 24000  # OpenAI's pcm is 24 kHz 16-bit little-endian mono by contract


class SpeechRequest(msgspec.Struct, kw_only=True):
    """POST /v1/audio/speech, as OpenAI defines it."""

    model: Annotated[str, msgspec.Meta(max_length=200)]
    input: Annotated[str, msgspec.Meta(max_length=4096, description="Text to say; at most 4096 characters.")]
    voice: Annotated[str, msgspec.Meta(max_length=200)] = DEFAULT_VOICE
    response_format: Annotated[str, msgspec.Meta(max_length=10)] = "mp3"
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    #: Chorus extensions (``extra_body`` in the openai client): reproducible and noise-controlled speech.
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    #: Markdown or SSML read as such (the default), or every character as written: see ``TextFormat``.
    text_format: TextFormat = "markdown"
    #: ``word`` (with ``stream_format: "sse"``): ``speech.audio.words`` events time each word in the audio.
    timestamps: Literal["none", "word"] = "none"


class OpenAIError(HTTPException):
    """An error carrying OpenAI's ``type``, ``param`` and ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(detail=message, status_code=status)
        self.param = param
        self.code = code


_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error", 500: "server_error"}  # fmt: skip
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 503: "service_unavailable", 500: "server_error"}


def _openai_error(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    if status >= 500:
        message = f"{message} (request id {request_id(request.scope)})"
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code or _CODES.get(status)}}  # fmt: skip
    headers = dict(headers or {})
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return Response(body, status_code=status, headers=headers or None)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, OpenAIError):
        return _openai_error(request, exc.status_code, exc.detail, param=exc.param, code=exc.code)
    message, param = client_error(exc)
    retry = (exc.headers or {}).get("Retry-After")
    return _openai_error(request, exc.status_code, message, param=param, retry_after_s=int(retry) if retry else None)


def openai_route_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """The router's own 404 and 405 under ``/v1`` (raised before any route, so the app's handlers get them)
    in OpenAI's shape, naming what is served."""
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        return _openai_error(request, 405, message, headers=exc.headers)
    served = (
        "POST /v1/audio/speech, GET /v1/models, GET /v1/models/{model}, GET /v1/audio/voices, "
        "WebSocket /v1/audio/speech/stream-input"
    )
    return _openai_error(request, 404, f"Invalid URL ({request.method} {request.url.path}); Chorus serves {served}")


def _inference_error(request: Request[Any, Any, Any], exc: InferenceError) -> Response[dict[str, Any]]:
    status = inference_status(exc)
    retry = max(1, round(exc.retry_after_s)) if isinstance(exc, QueueFullError) else (5 if status == 503 else None)
    message = str(exc) if status != 500 else "synthesis failed"
    return _openai_error(request, status, message, param="input" if status == 422 else None, retry_after_s=retry)


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    return _openai_error(request, 400, "the JSON body is nested too deeply")


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    return _openai_error(request, 500, "internal error")


def served_models(chorus: ServiceState) -> list[str]:
    """Names that select a served model: each model's own, then the aliases of the first (default) one."""
    names = list(chorus.pipelines) or [ready_pipeline(chorus).backend.info.name]
    return [*names, *OPENAI_MODEL_ALIASES]


def pipeline_for_model(chorus: ServiceState, model: str) -> SpeechPipeline:
    """The pipeline a request's ``model`` names (aliases mean the default), or a 404 listing the names."""
    default = ready_pipeline(chorus)
    if model in chorus.pipelines:
        return chorus.pipelines[model]
    if model in OPENAI_MODEL_ALIASES or model == default.backend.info.name:
        return default
    raise OpenAIError(
        404,
        f"model {model!r} is not served; use one of: {', '.join(served_models(chorus))}",
        param="model",
        code="model_not_found",
    )


def resolve_voice(info: ModelInfo, voice: str) -> str | None:
    """The model voice a request's ``voice`` means (None = the default), or a 400 listing the options."""
    if voice in info.voices:
        return voice
    if voice in (DEFAULT_VOICE, *OPENAI_VOICES) or voice == info.name:
        return None
    options = ", ".join([*info.voices, DEFAULT_VOICE, *OPENAI_VOICES])
    raise OpenAIError(
        400, f"voice {voice!r} is not served; use one of: {options}", param="voice", code="voice_not_found"
    )


@post(
    "/audio/speech",
    status_code=200,
    summary="OpenAI-compatible text to speech (streams by default)",
    operation_class=answers_also(*(spec.media_type for spec in FORMATS.values()), "text/event-stream"),
    responses={
        200: audio_spec("audio/mpeg", "The audio (audio/mpeg unless response_format asks for another)"),
        **error_specs(OpenAIErrorBody, 400, 401, 404, 415, 422, 429, 499, 500, 503, 504),
    },
)
async def create_speech(data: SpeechRequest, request: Request[Any, Any, Any], chorus: ServiceState) -> Response[Any]:
    """``client.audio.speech.create(...)``: audio in the requested format, streamed as it is made."""
    pipeline = pipeline_for_model(chorus, data.model)
    info = pipeline.backend.info
    voice = resolve_voice(info, data.voice)
    if data.timestamps != "none" and data.stream_format != "sse":
        raise OpenAIError(
            400, 'timestamps come as speech.audio.words events: send stream_format "sse" with them', param="timestamps"
        )
    try:
        fmt = check_format(data.response_format)
        timestamps = check_timestamps(info, data.timestamps)
        text = clean_text(data.input, 4096, field="input", text_format=data.text_format)
    except HTTPException as exc:
        param = next((p for p in ("response_format", "timestamps") if exc.detail.startswith(p)), "input")
        raise OpenAIError(exc.status_code, exc.detail, param=param) from None
    seed = data.seed if data.seed is not None else random_seed()
    params = SynthesisParams(
        temperature=data.temperature,
        speed=data.speed,
        seed=seed,
        voice=voice,
        seeded=data.seed is not None,
        timestamps=timestamps,
    )
    return await audio_response(
        request,
        pipeline,
        text,
        params,
        language=info.languages[0] if info.languages else "en",
        fmt=fmt,
        sample_rate_hz=OPENAI_PCM_RATE_HZ if fmt == "pcm" else None,
        stream=True,
        sse=data.stream_format == "sse",
    )


@get(
    "/models",
    summary="The models served (OpenAI's list shape)",
    responses=error_specs(OpenAIErrorBody, 401, 503),
)
async def list_models(chorus: ServiceState) -> dict[str, Any]:
    """Every name that selects the served model."""
    ready_pipeline(chorus)
    return {"object": "list", "data": [_model_object(chorus, name) for name in served_models(chorus)]}


@get(
    "/models/{model_id:str}",
    summary="One served model (OpenAI's retrieve shape)",
    responses=error_specs(OpenAIErrorBody, 401, 404, 503),
)
async def retrieve_model(chorus: ServiceState, model_id: str) -> dict[str, Any]:
    """``client.models.retrieve(name)``: the model a name selects, or 404 ``model_not_found``."""
    pipeline_for_model(chorus, model_id)
    return _model_object(chorus, model_id)


def _model_object(chorus: ServiceState, name: str) -> dict[str, Any]:
    created = int(time.time() - (time.monotonic() - chorus.started_at))
    return {"id": name, "object": "model", "created": created, "owned_by": "chorus"}


@get(
    "/audio/voices",
    summary="The voices of the served model",
    responses=error_specs(OpenAIErrorBody, 401, 404, 503),
)
async def list_voices(chorus: ServiceState, model: str | None = None) -> dict[str, Any]:
    """A model's own voices (``?model=``; default: the first model), and the names mapped onto its default."""
    info = (pipeline_for_model(chorus, model) if model else ready_pipeline(chorus)).backend.info
    own = list(info.voices) or [DEFAULT_VOICE]
    return {
        "object": "list",
        "data": [
            {"id": voice, "object": "voice", "default": voice == (info.default_voice or DEFAULT_VOICE)} for voice in own
        ],
        "aliases": {name: info.default_voice or DEFAULT_VOICE for name in (DEFAULT_VOICE, *OPENAI_VOICES)},
        # A Chorus extension: whether this model can time words (timestamps: "word").
        "word_timestamps": info.word_timestamps,
    }


openai_router = Router(
    path="/v1",
    route_handlers=[
        create_speech,
        list_models,
        retrieve_model,
        list_voices,
        speech_stream_input,
        elevenlabs_stream_input,
        elevenlabs_multi_stream_input,
        *ELEVENLABS_HTTP_ROUTES,
    ],
    opt={"bearer": True},
    exception_handlers={
        HTTPException: _http_error,
        InferenceError: _inference_error,
        RecursionError: _too_deep,
        500: _internal,
    },
)
