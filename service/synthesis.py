"""What the synthesis routes share: readiness, text checks, and whole or streamed audio responses."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import unicodedata
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from litestar import Request, Response
from litestar.response import Stream

from inference.audio.formats import FORMATS, StreamEncoder, encode_audio, media_type
from inference.backends.base import ModelInfo, SynthesisParams
from inference.offload import off_loop
from inference.speech import SpeechPipeline, WordTime
from inference.text import speakable_markdown
from inference.text.ssml import SsmlError, SsmlText, looks_like_ssml, parse_ssml
from service.errors import ClientDisconnectedError, ServiceUnavailableError, UnprocessableError
from service.schemas import GenerateRequest
from service.state import Phase, ServiceState

__all__ = [
    "audio_response", "check_format", "check_generate_timestamps", "check_timestamps", "clean_text",
    "clean_text_off_loop", "generate_params", "pipeline_for_language", "plain_text", "random_seed", "ready_pipeline",
    "served_language", "word_events",
]  # fmt: skip

_EMPTY = np.zeros(0, dtype=np.float32)
#: Up to this many samples a WAV/PCM body is encoded on the event loop instead of a worker thread (part of a
#: change measured as a whole: 2-4 ms less outside inference per request at c=1 on a 2-core VM).
_INLINE_ENCODE_SAMPLES = 240_000
T = TypeVar("T")


def ready_pipeline(chorus: ServiceState) -> SpeechPipeline:
    """The pipeline, or a 503 with Retry-After while loading, after a failed load, or while draining."""
    pipeline, batcher = chorus.pipeline, chorus.batcher
    if chorus.phase is Phase.READY and pipeline is not None and batcher is not None and batcher.accepting:
        return pipeline
    if chorus.phase is Phase.LOADING:
        raise ServiceUnavailableError("the model is still loading", headers={"Retry-After": "5"})
    if chorus.phase is Phase.FAILED:
        raise ServiceUnavailableError("the model failed to load", headers={"Retry-After": "30"})
    raise ServiceUnavailableError("the server is shutting down", headers={"Retry-After": "5"})


def pipeline_for_language(chorus: ServiceState, language: str) -> SpeechPipeline:
    """The ready pipeline of the model that serves ``language``, or a 422 listing the served languages."""
    default = ready_pipeline(chorus)
    routes = chorus.language_routes or {code: "" for code in default.backend.info.languages}
    for code, name in routes.items():
        if served_language(language, (code,)):
            return chorus.pipelines.get(name, default)
    raise UnprocessableError(f"language {language!r} is not served; served languages: {', '.join(routes)}")


def random_seed() -> int:
    """A seed for a request that names none: 63 random bits from the process's own generator.

    Not ``secrets``: seeds are no secret (``X-Seed`` returns them), and ``os.urandom`` is a system call that
    lets go of the interpreter lock, which the event loop then has to win back from the model thread and the
    preparing threads (0.6 µs alone, ~3 µs beside a thread running small torch operations, on 2 cores).
    Python reseeds this generator in a forked child, so granian's worker processes draw different seeds.
    """
    return random.getrandbits(63)


def generate_params(data: GenerateRequest) -> SynthesisParams:
    """The synthesis parameters of a ``/generate`` body (or a queue job): a random seed unless one is given.
    Check ``timestamps`` against the model first (``check_generate_timestamps``)."""
    return SynthesisParams(
        temperature=data.temperature,
        speed=data.speed,
        seed=data.seed if data.seed is not None else random_seed(),
        voice=data.voice or data.speaker,
        seeded=data.seed is not None,
        timestamps=data.timestamps == "word",
    )


def clean_text(text: str, limit: int, field: str = "text", *, text_format: str = "plain") -> str | SsmlText:
    """Refuse text over the limit (counted as sent) or with nothing in it. ``markdown``: Markdown is read as
    a person reads it aloud (``inference.text.markdown``), and a document whose root is ``<speak>`` is SSML;
    ``ssml``: SSML (``inference.text.ssml``; malformed: 422 saying where). Control characters become spaces
    or vanish."""
    if len(text) > limit:
        raise UnprocessableError(f"{field} is {len(text)} characters long; the limit is {limit}")
    if text_format == "ssml" or (text_format == "markdown" and looks_like_ssml(text)):
        try:
            document = parse_ssml(text)
        except SsmlError as exc:
            raise UnprocessableError(f"{field}: {exc}") from None
        segments = tuple(replace(s, text=_without_controls(s.text)) for s in document.segments)
        if not any(s.text.strip() for s in segments):
            raise UnprocessableError(f"{field} is empty: its SSML has nothing to say")
        return SsmlText(segments, document.ignored)
    if text_format == "markdown" and text.strip():
        text = speakable_markdown(text)
        if not text.strip():
            raise UnprocessableError(
                f'{field} has nothing to say once its Markdown is read; send text_format "plain" to say it as written'
            )
    cleaned = _without_controls(text)
    if not cleaned.strip():
        raise UnprocessableError(f"{field} is empty: send something to say")
    return cleaned


#: Longer texts are checked and read (Markdown, SSML) in a worker thread, off the event loop: ~0.3 ms a
#: kilobyte, so a 100,000-character stream would hold the loop for ~30 ms.
_INLINE_CLEAN_CHARS = 2000


async def clean_text_off_loop(
    text: str, limit: int, field: str = "text", *, text_format: str = "plain"
) -> str | SsmlText:
    """``clean_text``, in a worker thread when the text is long."""
    if len(text) <= _INLINE_CLEAN_CHARS or len(text) > limit:
        return clean_text(text, limit, field, text_format=text_format)
    return await off_loop(lambda: clean_text(text, limit, field, text_format=text_format))


def _without_controls(text: str) -> str:
    if text.isprintable():  # no control, format or separator character but the space: nothing to change
        return text
    return "".join(
        " " if ch in "\r\n\t\v\f" else ch for ch in text if ch in "\r\n\t\v\f" or unicodedata.category(ch)[0] != "C"
    )


def plain_text(text: str | SsmlText) -> str:
    """What is said, as plain text (SSML without its markup)."""
    return text.text if isinstance(text, SsmlText) else text


def served_language(requested: str, served: tuple[str, ...]) -> bool:
    """``en``, ``en-US`` and ``en_us`` all match a model that serves ``en``."""
    wanted = requested.strip().lower().replace("_", "-")
    options = {code.lower().replace("_", "-") for code in served}
    return wanted in options or wanted.split("-")[0] in options


def check_timestamps(info: ModelInfo, timestamps: str) -> bool:
    """Whether word timestamps were asked for (``"word"``), or a 422 when the model cannot time words."""
    if timestamps == "none":
        return False
    if not info.word_timestamps:
        raise UnprocessableError(
            f"timestamps: the {info.family} model {info.name!r} cannot time words (VITS and Piper voices can); "
            'send "none"'
        )
    return True


def check_generate_timestamps(info: ModelInfo, data: GenerateRequest) -> None:
    """A ``/generate`` body (or queue job) asks for timestamps the model can give, and not with a stream."""
    if check_timestamps(info, data.timestamps) and data.stream:
        raise UnprocessableError(
            'timestamps: "word" answers JSON with the whole audio, so not with "stream": true; for streamed audio '
            "with word times use /v1/audio/speech with stream_format sse, or the live WebSocket"
        )


def word_events(words: tuple[WordTime, ...], offset_s: float = 0.0) -> list[dict[str, Any]]:
    """Words as they go out in JSON: ``{"word", "start_s", "end_s"}``, ``offset_s`` later."""
    return [
        {"word": w.word, "start_s": round(w.start_s + offset_s, 3), "end_s": round(w.end_s + offset_s, 3)}
        for w in words
    ]


def check_format(fmt: str) -> str:
    """The format, or a 422 listing the supported ones."""
    if fmt not in FORMATS:
        raise UnprocessableError(f"response_format {fmt!r} is not supported; supported: {', '.join(FORMATS)}")
    return fmt


async def unless_disconnected(request: Request[Any, Any, Any], work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` unless the client goes away first; then cancel it (its queued jobs are dropped).

    Litestar does not cancel a handler whose client disconnects, so an abandoned request would keep
    its place in the queue and be synthesized for nobody. Watching ``receive()`` for
    ``http.disconnect`` beside the work notices it. (Plain asyncio tasks: an anyio task group and its
    cancel scope cost the event loop about a millisecond per request.)
    """

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()  # (also marks a failed watch as retrieved: it is not logged)
        if not task.done():
            task.cancel()  # the client left (or this handler was cancelled): the work is for nobody
            with contextlib.suppress(BaseException):
                await task  # let it drop its jobs before answering
    if task.cancelled():
        raise ClientDisconnectedError
    return task.result()


async def audio_response(
    request: Request[Any, Any, Any],
    pipeline: SpeechPipeline,
    text: str | SsmlText,
    params: SynthesisParams,
    *,
    language: str,
    fmt: str,
    sample_rate_hz: int | None,
    stream: bool,
    sse: bool = False,
) -> Response[Any]:
    """Synthesize and answer: a complete file with batch headers, or a stream as chunks finish."""
    source_rate = pipeline.backend.info.sample_rate_hz
    # Facts for the access log and metrics (never the text itself).
    facts: dict[str, Any] = request.scope.setdefault("state", {}).setdefault("synthesis", {})
    plain = plain_text(text)
    facts.update(text_chars=len(plain), format=fmt, stream=stream)
    notes = _ssml_header(text)
    if not stream:
        result = await unless_disconnected(request, pipeline.synthesize(text, params, language))
        facts.update(
            audio_s=round(result.samples / source_rate, 3),
            queue_ms=round(result.queue_s * 1000, 1),
            inference_ms=round(result.inference_s * 1000, 1),
            batch_size=result.batch_size,
        )
        if fmt in ("wav", "pcm") and sample_rate_hz in (None, source_rate) and result.samples <= _INLINE_ENCODE_SAMPLES:
            body, rate = encode_audio(result.chunks, fmt, source_rate)
        else:
            body, rate = await off_loop(encode_audio, result.chunks, fmt, source_rate, sample_rate_hz)
        media = media_type(fmt)
        if params.timestamps:  # the audio and its words' times in one JSON body (a queue job's output shape)
            timed = {
                "audio": base64.b64encode(body).decode("ascii"),
                "format": fmt,
                "sample_rate": rate,
                "duration_s": round(result.samples / source_rate, 3),
                "seed": params.seed,
                "batch_size": result.batch_size,
                "words": word_events(result.words),
            }
            body, media = json.dumps(timed).encode(), "application/json"
        headers = {
            "X-Batch-Size": str(result.batch_size),
            "X-Queue-Time-Ms": f"{result.queue_s * 1000:.1f}",
            "X-Inference-Time-Ms": f"{result.inference_s * 1000:.1f}",
            "X-Audio-Duration-S": f"{result.samples / source_rate:.3f}",
            "X-Seed": str(params.seed),
            "X-Sample-Rate": str(rate),
            **_unsaid_header(result.unsaid),
            **notes,
        }
        return Response(body, media_type=media, headers=headers)

    pipeline.batcher.check_admission()  # under overload, refuse before any work on the text
    unsaid = await off_loop(pipeline.unsayable, plain)
    chunks = await pipeline.open_stream(text, params, language)  # overload and bad text refused here
    encoder = StreamEncoder(fmt, source_rate, sample_rate_hz)

    async def pieces() -> AsyncIterator[tuple[bytes, list[dict[str, Any]]]]:
        """The stream's bytes as they are encoded, each with the words (timed in the whole stream) of the
        chunk it came from."""
        head = encoder.encode(_EMPTY)  # the WAV header goes out at once
        if head:
            yield head, []
        samples = 0
        async for done in chunks:
            chunk = done.value
            words = word_events(chunk.words, samples / source_rate) if chunk.words else []
            samples += len(chunk.audio)
            facts["audio_s"] = round(samples / source_rate, 3)
            facts["batch_size"] = max(facts.get("batch_size", 0), done.batch_size)
            data = encoder.encode(chunk.audio)
            if data or words:
                yield data, words
        tail = encoder.finish()
        if tail:
            yield tail, []

    async def audio() -> AsyncIterator[bytes]:
        async for data, _ in pieces():
            if data:
                yield data

    headers = {"X-Seed": str(params.seed), "X-Sample-Rate": str(encoder.rate_hz), **_unsaid_header(unsaid), **notes}
    if not sse:
        return Stream(audio(), media_type=media_type(fmt), headers=headers)

    async def events() -> AsyncIterator[bytes]:
        async for data, words in pieces():
            if words:  # a Chorus extension, asked for with timestamps: the words of the audio that follows
                yield f"data: {json.dumps({'type': 'speech.audio.words', 'words': words})}\n\n".encode()
            if data:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")}
                yield f"data: {json.dumps(event)}\n\n".encode()
        usage = {"input_tokens": len(plain), "output_tokens": 0, "total_tokens": len(plain)}
        # A Chorus extension (clients ignore unknown keys): what a stream's headers could not say yet.
        summary = {
            "audio_seconds": facts.get("audio_s", 0.0),
            "batch_size": facts.get("batch_size", 0),
            "seed": params.seed,
            "sample_rate": encoder.rate_hz,
        }
        done = {"type": "speech.audio.done", "usage": usage, "chorus": summary}
        yield f"data: {json.dumps(done)}\n\n".encode()

    return Stream(events(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


def _ssml_header(text: str | SsmlText) -> dict[str, str]:
    """SSML elements (and attributes) that were read for their text only are named, not silently dropped."""
    if isinstance(text, SsmlText) and text.ignored:
        return {"X-SSML-Ignored": json.dumps(", ".join(text.ignored)[:256])[1:-1]}
    return {}


def _unsaid_header(unsaid: str) -> dict[str, str]:
    """Characters the model cannot say are reported, not silently dropped: JSON-escaped, so ASCII."""
    return {"X-Unsaid-Characters": json.dumps(unsaid[:64])[1:-1]} if unsaid else {}
