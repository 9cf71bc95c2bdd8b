"""HTTP routes of the seed API: ``GET /ping`` and ``POST /generate``."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, head, post
from litestar.openapi.datastructures import ResponseSpec

from inference.audio.formats import FORMATS
from service.observability import CONTENT_TYPE
from service.schemas import ErrorBody, GenerateRequest, Health, answers_also, audio_spec, error_specs
from service.settings import Settings
from service.state import ServiceState
from service.synthesis import (
    audio_response,
    check_format,
    check_generate_timestamps,
    clean_text_off_loop,
    generate_params,
    pipeline_for_language,
)

__all__ = ["generate_speech", "metrics_route", "ping_routes", "stats"]


def ping_routes(settings: Settings) -> list[Any]:
    """``GET /ping`` (and ``HEALTH_CHECK_PATH`` when RunPod polls another path), and ``HEAD`` on the same
    paths for monitors that probe with it: the same status, no body."""
    paths = list(settings.health_paths())

    @get(
        paths,
        opt={"auth": False},
        summary="Health: 204 loading, 200 ready, 503 failed or draining",
        responses={
            204: ResponseSpec(data_container=None, description="Loading (no body)"),
            503: ResponseSpec(data_container=Health, description="Failed, stuck or draining", generate_examples=False),
        },
    )
    async def ping(chorus: ServiceState) -> Response[Health]:
        """RunPod's health check: a bare 204 while the model loads, then 200 ``{"status":"ok"}``."""
        status, body = chorus.health()
        if status == 204:
            return Response(None, status_code=204)  # type: ignore[arg-type]
        assert body is not None
        return Response(Health(**body), status_code=status)

    @head(paths, opt={"auth": False}, include_in_schema=False)
    async def ping_head(chorus: ServiceState) -> Response[None]:
        status, body = chorus.health()
        if status == 204 or body is None:
            return Response(None, status_code=status)
        # The headers GET would send, its Content-Length included; HEAD sends no body.
        length = str(len(msgspec.json.encode(Health(**body))))
        return Response(None, status_code=status, media_type=MediaType.JSON, headers={"Content-Length": length})

    return [ping, ping_head]


@get(
    "/stats",
    summary="Queue and batch counters: jobs run, dropped (disconnect, deadline), refused",
    responses=error_specs(ErrorBody, 401),
)
async def stats(chorus: ServiceState) -> dict[str, Any]:
    """Operator counters (a Prometheus endpoint comes with the operations work)."""
    return chorus.stats()


def metrics_route(settings: Settings) -> Any:
    """GET /metrics (Prometheus text format); key rule per CHORUS_METRICS."""

    @get(
        "/metrics",
        opt={"auth": settings.metrics == "auth"},
        include_in_schema=False,
        summary="Prometheus metrics",
    )
    async def prometheus_metrics(chorus: ServiceState) -> Response[bytes]:
        return Response(chorus.metrics.render(), media_type=CONTENT_TYPE)

    return prometheus_metrics


@post(
    "/generate",
    status_code=200,
    summary="Synthesize speech (WAV by default; streamed with stream=true)",
    operation_class=answers_also(*(spec.media_type for spec in FORMATS.values()), timed=True),
    responses={
        200: audio_spec(
            "audio/wav",
            "The audio (audio/wav unless response_format asks for another); with timestamps: word, JSON holding "
            "the audio (base64) and each word's start and end",
        ),
        **error_specs(ErrorBody, 401, 413, 415, 422, 429, 499, 500, 503, 504),
    },
)
async def generate_speech(
    data: GenerateRequest, request: Request[Any, Any, Any], chorus: ServiceState
) -> Response[Any]:
    """Synthesize ``text``; a complete file with the batch facts in ``X-*`` headers, or a stream."""
    pipeline = pipeline_for_language(chorus, data.language)
    settings = chorus.settings
    limit = settings.max_stream_chars if data.stream else settings.max_text_chars
    text = await clean_text_off_loop(data.text, limit, text_format=data.text_format)
    fmt = check_format(data.response_format)
    check_generate_timestamps(pipeline.backend.info, data)
    params = generate_params(data)
    return await audio_response(
        request,
        pipeline,
        text,
        params,
        language=data.language,
        fmt=fmt,
        sample_rate_hz=data.sample_rate,
        stream=data.stream,
    )
