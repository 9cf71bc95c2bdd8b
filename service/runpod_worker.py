"""RunPod queue mode: ``chorus runpod-worker`` runs the ``runpod`` SDK's serverless worker on our engine.

The handler is an async generator, so the SDK streams what it yields (``/stream``) and, with
``return_aggregate_stream``, returns the list of everything yielded from ``/run`` and ``/runsync``.
``concurrency_modifier`` lets the worker hold many jobs at once; each one's sentences go into the same
micro-batcher as HTTP requests would, so queued jobs batch together.

Input (``job["input"]``), validated exactly like ``POST /generate``::

    {"text", "language", "temperature", "speed", "seed", "voice", "response_format", "stream", "sample_rate",
     "text_format", "timestamps"}

Output, without ``stream``: one item, ``{"audio": base64, "format", "sample_rate", "duration_s", "seed",
"batch_size"}``, plus ``words`` (``[{"word", "start_s", "end_s"}]``) with ``"timestamps": "word"`` (not
with ``stream``). With ``stream``: items ``{"index", "audio", "format", "sample_rate"}`` of at most
``CHUNK_BYTES`` of audio each (under the SDK's 1 MB per streamed chunk once base64-encoded), then
``{"done": true, "chunks", "duration_s", "format", "sample_rate", "seed", "batch_size"}``. Both carry
``unsaid_characters`` and ``ssml_ignored`` when there are any (the HTTP headers' facts). A bad input or a
refused job yields ``{"error": "..."}``, which the SDK reports as the job's error. A job is never refused
for a full local queue: RunPod's queue holds the backlog, so a job it handed over waits for room (up to
``CHORUS_REQUEST_TIMEOUT_S``) where an HTTP request would get 429.

The ``runpod`` package is the optional extra ``chorus-tts[runpod]``; nothing else imports it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import numpy as np
from litestar.exceptions import HTTPException

from inference.audio.formats import StreamEncoder, encode_audio
from inference.backends.base import Backend
from inference.errors import InferenceError, QueueFullError
from inference.offload import off_loop
from inference.text.ssml import SsmlText
from service.engine import bring_up
from service.schemas import GenerateRequest
from service.settings import Settings
from service.state import Phase, ServiceState
from service.synthesis import (
    check_format,
    check_generate_timestamps,
    clean_text,
    generate_params,
    pipeline_for_language,
    plain_text,
    word_events,
)

__all__ = ["CHUNK_BYTES", "MAX_OUTPUT_BYTES", "make_handler", "run_worker", "start_engine"]

log = logging.getLogger("chorus")

#: Audio bytes per streamed item: base64 makes 512 KiB into ~683 KiB, under RunPod's 1 MB per chunk.
CHUNK_BYTES = 512 * 1024
#: Largest non-streamed audio (before base64) that fits RunPod's 20 MB /runsync response.
MAX_OUTPUT_BYTES = 14 * 1024 * 1024
_EMPTY = np.zeros(0, dtype=np.float32)


class JobInputError(ValueError):
    """The job's input is malformed; the message names the field."""


def parse_input(raw: object, settings: Settings) -> tuple[GenerateRequest, str | SsmlText]:
    """``job["input"]`` as a GenerateRequest, checked like the HTTP route checks it, and its text as it is
    to be said (Markdown read, SSML parsed: once)."""
    if not isinstance(raw, dict):
        raise JobInputError('the job needs an "input" object, e.g. {"input": {"text": "Hello"}}')
    try:
        request = msgspec.convert(raw, GenerateRequest)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$.", "input.")
        raise JobInputError(f"invalid input: {message}") from None
    limit = settings.max_stream_chars if request.stream else settings.max_text_chars
    try:
        text = clean_text(request.text, limit, text_format=request.text_format)
        check_format(request.response_format)
    except HTTPException as exc:
        raise JobInputError(str(exc.detail)) from None
    return request, text


def _notes(text: str | SsmlText, unsaid: str) -> dict[str, Any]:
    """What the HTTP headers X-Unsaid-Characters and X-SSML-Ignored say, for a job's output (only when any)."""
    notes: dict[str, Any] = {}
    if unsaid:
        notes["unsaid_characters"] = unsaid
    if isinstance(text, SsmlText) and text.ignored:
        notes["ssml_ignored"] = list(text.ignored)
    return notes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


T = TypeVar("T")


async def when_admitted(start: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """``start()``, again after each ``QueueFullError`` until it is admitted or ``timeout_s`` would pass."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await start()
        except QueueFullError as exc:
            if time.monotonic() + min(exc.retry_after_s, 1.0) > deadline:
                raise
            await asyncio.sleep(min(exc.retry_after_s, 1.0))


def make_handler(chorus: ServiceState) -> Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
    """The SDK's handler: one job in, audio items out (see the module docs for their shapes)."""

    async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if chorus.phase is not Phase.READY or chorus.pipeline is None:
            yield {"error": f"the worker is not ready ({chorus.failure or chorus.phase.value})"}
            return
        try:
            request, text = parse_input(job.get("input"), chorus.settings)
            pipeline = pipeline_for_language(chorus, request.language)
            check_generate_timestamps(pipeline.backend.info, request)
        except JobInputError as exc:
            yield {"error": str(exc)}
            return
        except HTTPException as exc:
            yield {"error": str(exc.detail)}
            return
        info = pipeline.backend.info
        params = generate_params(request)
        seed = params.seed
        fmt, rate_in = request.response_format, info.sample_rate_hz
        try:
            if not request.stream:
                result = await when_admitted(
                    lambda: pipeline.synthesize(text, params, request.language), chorus.settings.request_timeout_s
                )
                body, rate = await off_loop(encode_audio, result.chunks, fmt, rate_in, request.sample_rate)
                if len(body) > MAX_OUTPUT_BYTES:
                    yield {
                        "error": f"the audio is {len(body)} bytes, over the {MAX_OUTPUT_BYTES} a response may "
                        'carry: use "stream": true or a compressed response_format'
                    }
                    return
                yield {
                    "audio": _b64(body),
                    "format": fmt,
                    "sample_rate": rate,
                    "duration_s": round(result.samples / rate_in, 3),
                    "seed": seed,
                    "batch_size": result.batch_size,
                    **({"words": word_events(result.words)} if params.timestamps else {}),
                    **_notes(text, result.unsaid),
                }
                return
            unsaid = await off_loop(pipeline.unsayable, plain_text(text))
            chunks = await when_admitted(
                lambda: pipeline.open_stream(text, params, request.language), chorus.settings.request_timeout_s
            )
            encoder = StreamEncoder(fmt, rate_in, request.sample_rate)
            pending = bytearray(encoder.encode(_EMPTY))
            index = samples = batch_size = 0
            async for done in chunks:
                samples += len(done.value.audio)
                batch_size = max(batch_size, done.batch_size)
                pending += encoder.encode(done.value.audio)
                while len(pending) >= CHUNK_BYTES:
                    yield {"index": index, "audio": _b64(bytes(pending[:CHUNK_BYTES])), "format": fmt,
                           "sample_rate": encoder.rate_hz}  # fmt: skip
                    del pending[:CHUNK_BYTES]
                    index += 1
                if pending:  # each sentence goes out as soon as it is made
                    yield {"index": index, "audio": _b64(bytes(pending)), "format": fmt, "sample_rate": encoder.rate_hz}
                    pending.clear()
                    index += 1
            pending += encoder.finish()
            if pending:
                yield {"index": index, "audio": _b64(bytes(pending)), "format": fmt, "sample_rate": encoder.rate_hz}
                index += 1
            yield {
                "done": True,
                "chunks": index,
                "duration_s": round(samples / rate_in, 3),
                "format": fmt,
                "sample_rate": encoder.rate_hz,
                "seed": seed,
                "batch_size": batch_size,
                **_notes(text, unsaid),
            }
        except QueueFullError as exc:
            yield {"error": f"overloaded: {exc}; retry in {max(1, round(exc.retry_after_s))} s"}
        except InferenceError as exc:
            yield {"error": str(exc)}

    return handler


def concurrency(settings: Settings) -> Callable[[int], int]:
    """How many jobs the SDK may hand this worker at once: enough to fill batches, bounded by the queue."""
    # Unset: 32 jobs, over twice even the CPU cap; a GPU's 64-row batches fill from queue jobs only when
    # CHORUS_RUNPOD_CONCURRENCY is raised (a job held here waits where the platform could hand it on).
    limit = settings.runpod_concurrency or max(1, min(settings.max_queue, 2 * (settings.max_batch_size or 16)))

    def modifier(current: int) -> int:
        return limit

    return modifier


def start_engine(settings: Settings, backend: Backend | None = None) -> ServiceState:
    """Load and warm the model (on the batcher's thread) before the worker takes its first job."""
    chorus = ServiceState(settings=settings)
    asyncio.run(bring_up(chorus, backend))
    if chorus.phase is not Phase.READY:
        raise RuntimeError(chorus.failure or "the model did not load")
    return chorus


def _aggregate(
    handler: Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]],
) -> Callable[[dict[str, Any]], Any]:
    """For the SDK's ``--test_input`` mode, which awaits handlers and cannot iterate a generator: the list
    of items, as ``return_aggregate_stream`` returns it on RunPod; the first error fails the job."""

    async def collected(job: dict[str, Any]) -> Any:
        items = [item async for item in handler(job)]
        errors = [item["error"] for item in items if "error" in item]
        return {"error": errors[0]} if errors else items

    return collected


def run_worker(argv: list[str]) -> int:
    """``chorus runpod-worker [SDK flags]``: load the model, then hand control to the SDK."""
    try:
        import runpod
    except ImportError:
        print("chorus: the runpod SDK is not installed: pip install 'chorus-tts[runpod]'", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chorus = start_engine(settings)
    except RuntimeError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 1
    handler = make_handler(chorus)
    sys.argv = [sys.argv[0], *argv]  # the SDK reads its own flags (--test_input, --rp_serve_api, ...)
    local_test = any(arg == "--test_input" or arg.startswith("--test_input=") for arg in argv)
    runpod.serverless.start(
        {
            "handler": _aggregate(handler) if local_test else handler,
            "concurrency_modifier": concurrency(settings),
            "return_aggregate_stream": True,
        }
    )
    return 0
