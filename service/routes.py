"""HTTP routes: the seed API (``GET /ping``, ``POST /generate``)."""

from __future__ import annotations

import secrets
import unicodedata
from typing import Any

import anyio
import numpy as np
from litestar import Request, Response, get, post

from inference.audio import wav_bytes
from inference.backends.base import SynthesisParams
from service.errors import ServiceUnavailableError, UnprocessableError
from service.schemas import GenerateRequest
from service.state import Phase, ServiceState

__all__ = ["generate_speech", "ping"]


@get("/ping", opt={"auth": False}, summary="Health: 204 loading, 200 ready, 503 failed or draining")
async def ping(chorus: ServiceState) -> Response[Any]:
    """RunPod's health check: a bare 204 while the model loads, then 200 ``{"status":"ok"}``."""
    status, body = chorus.health()
    if status == 204:
        return Response(None, status_code=204)
    return Response(body, status_code=status)


def _served_language(requested: str, served: tuple[str, ...]) -> bool:
    wanted = requested.strip().lower().replace("_", "-")
    options = {code.lower().replace("_", "-") for code in served}
    return wanted in options or wanted.split("-")[0] in options


def _check_ready(chorus: ServiceState) -> None:
    if chorus.phase is Phase.READY and chorus.batcher is not None and chorus.batcher.accepting:
        return
    if chorus.phase is Phase.LOADING:
        raise ServiceUnavailableError("the model is still loading", headers={"Retry-After": "5"})
    if chorus.phase is Phase.DRAINING or chorus.phase is Phase.READY:
        raise ServiceUnavailableError("the server is shutting down", headers={"Retry-After": "5"})
    raise ServiceUnavailableError("the model failed to load", headers={"Retry-After": "30"})


def _clean_text(text: str, limit: int) -> str:
    if len(text) > limit:
        raise UnprocessableError(f"text is {len(text)} characters long; the limit is {limit}")
    # Control characters (NUL and friends) carry nothing to say; newlines and tabs are whitespace.
    cleaned = "".join(
        " " if ch in "\r\n\t\v\f" else ch for ch in text if ch in "\r\n\t\v\f" or unicodedata.category(ch)[0] != "C"
    )
    if not cleaned.strip():
        raise UnprocessableError("text is empty: send something to say")
    return cleaned


@post("/generate", status_code=200, summary="Synthesize speech; answers a complete 16-bit PCM mono WAV")
async def generate_speech(
    data: GenerateRequest, request: Request[Any, Any, Any], chorus: ServiceState
) -> Response[bytes]:
    """Synthesize ``text`` and answer ``audio/wav`` with the batch facts in ``X-*`` headers."""
    _check_ready(chorus)
    backend, batcher = chorus.backend, chorus.batcher
    assert backend is not None
    assert batcher is not None
    info = backend.info
    text = _clean_text(data.text, chorus.settings.max_text_chars)
    if not _served_language(data.language, info.languages):
        raise UnprocessableError(
            f"language {data.language!r} is not served; served languages: {', '.join(info.languages)}"
        )
    seed = data.seed if data.seed is not None else secrets.randbits(63)
    params = SynthesisParams(
        temperature=data.temperature, speed=data.speed, seed=seed, voice=data.voice or data.speaker
    )
    # Phonemization can take milliseconds per sentence: keep it off the event loop.
    jobs = await anyio.to_thread.run_sync(backend.prepare, text, params)
    results = await batcher.run(jobs)

    audio = np.concatenate([done.value for done in results]) if len(results) > 1 else results[0].value
    body = wav_bytes(audio, info.sample_rate_hz)  # type: ignore[arg-type]
    batches = {done.batch_id: done.inference_s for done in results}
    headers = {
        "X-Batch-Size": str(max(done.batch_size for done in results)),
        "X-Queue-Time-Ms": f"{max(done.queue_s for done in results) * 1000:.1f}",
        "X-Inference-Time-Ms": f"{sum(batches.values()) * 1000:.1f}",
        "X-Audio-Duration-S": f"{len(audio) / info.sample_rate_hz:.3f}",  # type: ignore[arg-type]
        "X-Seed": str(seed),
    }
    return Response(body, media_type="audio/wav", headers=headers)
