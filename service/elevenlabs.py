"""ElevenLabs' API, spoken by Chorus: clients and voice-agent frameworks built on it point here unchanged.

Over HTTP, ``POST /v1/text-to-speech/{voice_id}`` (the whole audio), ``/stream`` (as each sentence is made),
``/with-timestamps`` and ``/stream/with-timestamps`` (with ElevenLabs' character alignment; one JSON object
a line): a JSON body ``{"text", "model_id", "voice_settings", "seed"}``, ``output_format`` in the query.

Pipecat's ``ElevenLabsTTSService`` (its ``url``) and other ElevenLabs clients stream a language model's text
over ``/v1/text-to-speech/{voice_id}/stream-input`` (one stream a socket) or ``/multi-stream-input``
(several contexts a socket, one per turn). Both run on Chorus's live sessions (``service.live``): the same
sentence buffer, need-first batching, ``auto`` chunking, settling and lateness count; only the messages
differ:

* the query string: ``model_id`` (a served model's name; others mean the default model), ``output_format``
  (``pcm_<rate>``, ``mp3_<rate>_<kbps>``, ``opus_48000_<kbps>``, ``ulaw_8000``, ``alaw_8000``; ElevenLabs'
  default ``mp3_44100_128``), ``inactivity_timeout`` (seconds, 1-180, default 20), ``seed``, ``auto_mode``
  (every text message is a complete phrase: said at once); the rest (``sync_alignment``, ``language_code``,
  ...) is accepted and has no effect;
* the key: ``xi-api-key`` header, ``authorization`` query, or (as ElevenLabs allows) ``xi_api_key`` /
  ``xi-api-key`` / ``authorization`` in the first message; Chorus's own ``X-API-Key`` and bearer work too;
* client messages: ``{"text": " ", "voice_settings": {"speed": 1.1}}`` opens (a context), ``{"text":
  "Hello "}`` adds text, ``"flush": true`` says what waits, ``{"text": ""}`` ends the stream (multi: keeps
  a context alive), ``{"context_id", "close_context": true}`` ends a context (what was flushed is still
  said; without a flush since its last text, the caller interrupted: what is not yet sent is dropped),
  ``{"close_socket": true}`` ends them all;
* server messages: ``{"audio": base64, "alignment": {"chars", "charStartTimesMs", "charDurationsMs"},
  "normalizedAlignment": ...}`` per sentence (times in ms from the start of that message's audio, each
  word's characters spread over its time, the last character a space that lasts to the audio's end), then
  ``{"isFinal": true}``; on the multi socket each with ``contextId``. An error is ``{"error", "message",
  "code"}`` before the socket closes (1008 for a refused key or setting, 1013 for overload).

``voice_id`` is a voice of the model when it has one by that name; any other id (ElevenLabs' are random
strings) means the default voice, so that a client configured for ElevenLabs works unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from dataclasses import replace
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, WebSocket, post, websocket
from litestar.exceptions import HTTPException
from litestar.response import Stream

from inference.audio.formats import FORMATS, StreamEncoder, encode_audio
from inference.backends.base import SynthesisParams
from inference.offload import off_loop
from inference.speech import SpeechPipeline, Spoken, WordTime
from service.auth import api_key_problem
from service.live import (
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    ClientMessage,
    LiveConfig,
    LiveSession,
    Refused,
    Said,
    close_after,
)
from service.schemas import OpenAIErrorBody, Seed, answers_also, audio_spec, error_specs
from service.state import Phase, ServiceState
from service.synthesis import audio_response, clean_text_off_loop, random_seed, ready_pipeline, unless_disconnected

__all__ = [
    "ELEVENLABS_HTTP_ROUTES", "elevenlabs_multi_stream_input", "elevenlabs_stream_input", "output_format",
]  # fmt: skip

log = logging.getLogger("chorus")

_FORMATS = {"pcm": "pcm", "mp3": "mp3", "opus": "opus", "ulaw": "mulaw", "alaw": "alaw"}
_OUTPUT_FORMAT = re.compile(r"(pcm|mp3|opus|ulaw|alaw)_(\d{4,5})(?:_\d{1,3})?")
_DEFAULT_CONTEXT = ""
#: Contexts one multi socket may have open at once (a turn each; more is a client that forgets to close them).
MAX_CONTEXTS = 8
_NORMAL, _RESTART = 1000, 1012


class ElevenLabsQuery(msgspec.Struct, kw_only=True):
    """The query string; parameters ElevenLabs has that Chorus does not use are ignored."""

    model_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    output_format: Annotated[str, msgspec.Meta(max_length=40)] = "mp3_44100_128"
    inactivity_timeout: Annotated[int, msgspec.Meta(ge=1, le=180)] = 20
    seed: Seed | None = None
    authorization: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    #: The client sends complete phrases (Pipecat does when it aggregates sentences): each is said at once,
    #: instead of waiting for a word after it to show that it ended.
    auto_mode: bool = False


class VoiceSettings(msgspec.Struct, kw_only=True):
    """``voice_settings``: Chorus uses ``speed``; stability, similarity and style have no VITS equivalent."""

    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] | None = None


class Message(msgspec.Struct, kw_only=True):
    """Every client message of both sockets, as one shape (all fields optional, unknown ones ignored)."""

    text: str | None = None
    context_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    flush: bool = False
    close_context: bool = False
    close_socket: bool = False
    voice_settings: VoiceSettings | None = None
    xi_api_key: str | None = None
    xi_api_key_dashed: str | None = msgspec.field(default=None, name="xi-api-key")
    authorization: str | None = None

    def keys(self) -> tuple[str, ...]:
        return tuple(_token(k) for k in (self.xi_api_key, self.xi_api_key_dashed, self.authorization) if k)


def _token(value: str) -> str:
    """A key as sent, without a ``Bearer`` scheme in front."""
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else value.strip()


def output_format(value: str) -> tuple[str, int | None]:
    """``pcm_24000`` → (``pcm``, 24000): Chorus's format and sample rate, or ValueError naming the choices."""
    match = _OUTPUT_FORMAT.fullmatch(value)
    if match is None or not 8000 <= int(match.group(2)) <= 48000:
        raise ValueError(
            f"output_format {value!r} is not supported; use pcm_<rate> (8000-48000), mp3_<rate>_<kbps>, "
            "opus_48000_<kbps>, ulaw_8000 or alaw_8000"
        )
    fmt = _FORMATS[match.group(1)]
    return fmt, None if fmt in ("mulaw", "alaw") else int(match.group(2))


def char_times(words: tuple[WordTime, ...], seconds: float) -> tuple[list[str], list[float], list[float]]:
    """ElevenLabs' character alignment of ``words``: each word's characters share its time evenly, the space
    after it lasts until the next word starts, and the last space until ``seconds`` (the audio's end:
    clients such as Pipecat add up the last character's end to place what follows)."""
    chars: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    nexts = [w.start_s for w in words[1:]] + [max(seconds, words[-1].end_s if words else 0.0)]
    for word, next_start in zip(words, nexts, strict=True):
        count = len(word.word)
        span = word.end_s - word.start_s
        for i, char in enumerate(word.word):
            chars.append(char)
            starts.append(word.start_s + span * i / count)
            ends.append(word.start_s + span * (i + 1) / count)
        chars.append(" ")
        starts.append(word.end_s)
        ends.append(max(word.end_s, next_start))
    return chars, starts, ends


def alignment(words: tuple[WordTime, ...], seconds: float) -> dict[str, list[Any]] | None:
    """The WebSocket alignment of one audio message (integer ms from its start), or None without words."""
    if not words:
        return None
    chars, starts, ends = char_times(words, seconds)
    start_ms = [round(t * 1000) for t in starts]
    durations = [max(0, round(e * 1000) - b) for b, e in zip(start_ms, ends, strict=True)]
    return {"chars": chars, "charStartTimesMs": start_ms, "charDurationsMs": durations}


def http_alignment(words: tuple[WordTime, ...], seconds: float, offset_s: float = 0.0) -> dict[str, list[Any]] | None:
    """The HTTP alignment (seconds, ``offset_s`` later: in the whole request's audio), or None without words."""
    if not words:
        return None
    chars, starts, ends = char_times(words, seconds)
    return {
        "characters": chars,
        "character_start_times_seconds": [round(t + offset_s, 3) for t in starts],
        "character_end_times_seconds": [round(t + offset_s, 3) for t in ends],
    }


# ---------------------------------------------------------------------------------------------- HTTP


class SpeechBody(msgspec.Struct, kw_only=True):
    """ElevenLabs' text-to-speech body; its other fields (``previous_text``, ``language_code``,
    ``apply_text_normalization``, pronunciation dictionaries) are accepted and have no effect."""

    text: Annotated[str, msgspec.Meta(max_length=100_000, description="What to say.")]
    model_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    voice_settings: VoiceSettings | None = None
    seed: Seed | None = None


def _chosen(chorus: ServiceState, model_id: str | None) -> SpeechPipeline:
    """A served model's name selects it; anything else (ElevenLabs' own ids) means the default model."""
    from service.openai_api import served_models  # (it imports this module's routes)

    default = ready_pipeline(chorus)
    return chorus.pipelines.get(model_id or "", default) if model_id in served_models(chorus) else default


async def _request(
    chorus: ServiceState, voice_id: str, data: SpeechBody, fmt_name: str, *, stream: bool, timestamps: bool = False
) -> tuple[SpeechPipeline, Any, SynthesisParams, str, int | None, str]:
    from service.openai_api import OpenAIError

    try:
        fmt, rate = output_format(fmt_name)
    except ValueError as exc:
        raise OpenAIError(422, str(exc), param="output_format") from None
    pipeline = _chosen(chorus, data.model_id)
    info = pipeline.backend.info
    limit = chorus.settings.max_stream_chars if stream else chorus.settings.max_text_chars
    try:
        text = await clean_text_off_loop(data.text, limit, text_format="markdown")
    except HTTPException as exc:
        raise OpenAIError(exc.status_code, exc.detail, param="text") from None
    speed = data.voice_settings.speed if data.voice_settings and data.voice_settings.speed else 1.0
    params = SynthesisParams(
        speed=speed,
        seed=data.seed if data.seed is not None else random_seed(),
        voice=voice_id if voice_id in info.voices else None,
        seeded=data.seed is not None,
        timestamps=timestamps and info.word_timestamps,
    )
    return pipeline, text, params, fmt, rate, info.languages[0] if info.languages else "en"


_HTTP_OPT = {"xi_api_key": True}
_HTTP_ERRORS = error_specs(OpenAIErrorBody, 400, 401, 413, 415, 422, 429, 499, 500, 503, 504)


@post(
    "/text-to-speech/{voice_id:str}",
    status_code=200,
    opt=_HTTP_OPT,
    summary="ElevenLabs-compatible text to speech: the whole audio",
    operation_class=answers_also(*(FORMATS[fmt].media_type for fmt in _FORMATS.values())),
    responses={200: audio_spec("audio/mpeg", "The audio, in output_format (default mp3)"), **_HTTP_ERRORS},
)
async def elevenlabs_speech(
    voice_id: str, data: SpeechBody, request: Request[Any, Any, Any], chorus: ServiceState,
    output_format: str = "mp3_44100_128",
) -> Response[Any]:  # fmt: skip
    """ElevenLabs' ``text_to_speech.convert``: the audio, whole."""
    pipeline, text, params, fmt, rate, language = await _request(chorus, voice_id, data, output_format, stream=False)
    return await audio_response(
        request, pipeline, text, params, language=language, fmt=fmt, sample_rate_hz=rate, stream=False
    )


@post(
    "/text-to-speech/{voice_id:str}/stream",
    status_code=200,
    opt=_HTTP_OPT,
    summary="ElevenLabs-compatible text to speech: the audio streamed as it is made",
    operation_class=answers_also(*(FORMATS[fmt].media_type for fmt in _FORMATS.values())),
    responses={200: audio_spec("audio/mpeg", "The audio, in output_format (default mp3)"), **_HTTP_ERRORS},
)
async def elevenlabs_speech_stream(
    voice_id: str, data: SpeechBody, request: Request[Any, Any, Any], chorus: ServiceState,
    output_format: str = "mp3_44100_128",
) -> Response[Any]:  # fmt: skip
    """ElevenLabs' ``text_to_speech.stream``: the audio as each sentence is made."""
    pipeline, text, params, fmt, rate, language = await _request(chorus, voice_id, data, output_format, stream=True)
    return await audio_response(
        request, pipeline, text, params, language=language, fmt=fmt, sample_rate_hz=rate, stream=True
    )


class TimedAudio(msgspec.Struct):
    """The audio (base64) with ElevenLabs' character alignment (``null`` for models that cannot time words)."""

    audio_base64: str
    alignment: dict[str, list[Any]] | None
    normalized_alignment: dict[str, list[Any]] | None


@post(
    "/text-to-speech/{voice_id:str}/with-timestamps",
    status_code=200,
    opt=_HTTP_OPT,
    summary="ElevenLabs-compatible text to speech with character timing",
    responses=_HTTP_ERRORS,
)
async def elevenlabs_speech_timed(
    voice_id: str, data: SpeechBody, request: Request[Any, Any, Any], chorus: ServiceState,
    output_format: str = "mp3_44100_128",
) -> TimedAudio:  # fmt: skip
    """ElevenLabs' ``text_to_speech.convert_with_timestamps``: the audio and each character's time."""
    pipeline, text, params, fmt, rate, language = await _request(
        chorus, voice_id, data, output_format, stream=False, timestamps=True
    )
    pipeline.batcher.check_admission()
    result = await unless_disconnected(request, pipeline.synthesize(text, params, language))
    source_rate = pipeline.backend.info.sample_rate_hz
    body, _ = await off_loop(encode_audio, result.chunks, fmt, source_rate, rate)
    aligned = http_alignment(result.words, result.samples / source_rate)
    return TimedAudio(base64.b64encode(body).decode("ascii"), aligned, aligned)


@post(
    "/text-to-speech/{voice_id:str}/stream/with-timestamps",
    status_code=200,
    opt=_HTTP_OPT,
    summary="ElevenLabs-compatible streamed text to speech with character timing (one JSON object a line)",
    responses={
        200: audio_spec("application/x-ndjson", "A line per sentence: audio_base64, alignment, normalized_alignment"),
        **_HTTP_ERRORS,
    },
)
async def elevenlabs_speech_stream_timed(
    voice_id: str, data: SpeechBody, request: Request[Any, Any, Any], chorus: ServiceState,
    output_format: str = "mp3_44100_128",
) -> Stream:  # fmt: skip
    """ElevenLabs' ``text_to_speech.stream_with_timestamps``: a JSON line per sentence, its audio (base64)
    and its characters' times in the whole audio."""
    pipeline, text, params, fmt, rate, language = await _request(
        chorus, voice_id, data, output_format, stream=True, timestamps=True
    )
    pipeline.batcher.check_admission()
    chunks = await pipeline.open_stream(text, params, language)  # overload and bad text refused here
    source_rate = pipeline.backend.info.sample_rate_hz
    encoder = StreamEncoder(fmt, source_rate, rate)

    def line(data: bytes, aligned: dict[str, list[Any]] | None) -> bytes:
        item = {"audio_base64": base64.b64encode(data).decode("ascii"), "alignment": aligned,
                "normalized_alignment": aligned}  # fmt: skip
        return msgspec.json.encode(item) + b"\n"

    async def lines() -> Any:
        samples = 0
        async for done in chunks:
            chunk = done.value
            aligned = http_alignment(chunk.words, len(chunk.audio) / source_rate, samples / source_rate)
            samples += len(chunk.audio)
            yield line(encoder.encode(chunk.audio), aligned)
        if tail := encoder.finish():
            yield line(tail, None)

    headers = {"X-Seed": str(params.seed), "X-Sample-Rate": str(encoder.rate_hz)}
    return Stream(lines(), media_type="application/x-ndjson", headers=headers)


ELEVENLABS_HTTP_ROUTES = [
    elevenlabs_speech,
    elevenlabs_speech_stream,
    elevenlabs_speech_timed,
    elevenlabs_speech_stream_timed,
]


# ---------------------------------------------------------------------------------------------- WebSockets


@websocket("/text-to-speech/{voice_id:str}/stream-input", opt={"auth": False})
async def elevenlabs_stream_input(socket: WebSocket[Any, Any, Any], chorus: ServiceState, voice_id: str) -> None:
    """ElevenLabs' single-stream text-in WebSocket (see the module's docstring)."""
    await _serve(socket, chorus, voice_id, multi=False)


@websocket("/text-to-speech/{voice_id:str}/multi-stream-input", opt={"auth": False})
async def elevenlabs_multi_stream_input(socket: WebSocket[Any, Any, Any], chorus: ServiceState, voice_id: str) -> None:
    """ElevenLabs' multi-context text-in WebSocket (see the module's docstring)."""
    await _serve(socket, chorus, voice_id, multi=True)


async def _serve(socket: WebSocket[Any, Any, Any], chorus: ServiceState, voice_id: str, *, multi: bool) -> None:
    await socket.accept()
    facts: dict[str, Any] = socket.scope.setdefault("state", {}).setdefault("synthesis", {})
    facts.update(stream=True, live=True, dialect="elevenlabs", text_chars=0, sentences=0, audio_s=0.0)
    try:
        connection = _open(socket, chorus, voice_id, multi)
    except Refused as refused:
        await _end(socket, refused, drain=True)  # (nothing reads the socket yet)
        return
    chorus.live_sessions += 1
    try:
        await connection.run(facts)
    finally:
        chorus.live_sessions -= 1


def _open(socket: WebSocket[Any, Any, Any], chorus: ServiceState, voice_id: str, multi: bool) -> _Connection:
    try:
        query = msgspec.convert(dict(socket.query_params), ElevenLabsQuery, strict=False)
        fmt, rate = output_format(query.output_format)
    except (msgspec.ValidationError, ValueError) as exc:
        raise Refused(400, f"query string: {exc}", POLICY_VIOLATION) from None
    try:
        pipeline = _chosen(chorus, query.model_id)
    except HTTPException as exc:  # loading, failed or draining: come back later
        retry = int((exc.headers or {}).get("Retry-After", "5"))
        raise Refused(503, exc.detail, TRY_AGAIN_LATER, retry_after_s=retry) from None
    info = pipeline.backend.info
    params = SynthesisParams(
        seed=query.seed if query.seed is not None else random_seed(),
        voice=voice_id if voice_id in info.voices else None,
        seeded=query.seed is not None,
        timestamps=info.word_timestamps,
    )
    header_keys = tuple(k for k in (socket.headers.get("xi-api-key"), query.authorization) if k)
    return _Connection(socket, chorus, pipeline, params, fmt, rate, query, multi, tuple(map(_token, header_keys)))


class _Context(LiveSession):
    """One ElevenLabs stream (a context of the multi socket): a live session whose messages are ElevenLabs'."""

    def __init__(self, connection: _Connection, context_id: str | None, params: SynthesisParams) -> None:
        config = LiveConfig(sample_rate=connection.rate, timestamps="word" if params.timestamps else "none")
        super().__init__(connection.socket, connection.chorus, connection.pipeline, params, connection.fmt, config)
        self.idle_timeout_s = float(connection.query.inactivity_timeout)
        self.connection = connection
        self.context_id = context_id
        #: Whether a flush was asked since the last text: then ``close_context`` still says it all.
        self.flushed = False

    def _tagged(self, message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "contextId": self.context_id} if self.connection.multi else message

    async def _sentence(self, said: Said, spoken: Spoken, start: float) -> None:
        data = self.encoder.encode(spoken.audio)
        aligned = alignment(spoken.words, len(spoken.audio) / self.source_rate)
        message = {
            "audio": base64.b64encode(data).decode("ascii"),
            "alignment": aligned,
            "normalizedAlignment": aligned,
        }
        await self._send_json(self._tagged(message))

    async def _send_audio(self, data: bytes) -> None:
        if data:  # a codec's header or tail, outside any sentence
            message = {"audio": base64.b64encode(data).decode("ascii"), "alignment": None, "normalizedAlignment": None}
            await self._send_json(self._tagged(message))

    async def _flushed(self) -> None:
        return  # ElevenLabs does not acknowledge a flush

    async def _done(self) -> None:
        await self._send_json(self._tagged({"isFinal": True}))

    async def _error(self, status: int, detail: str) -> None:
        async with self.send_lock:
            await self._send_json(self._tagged(_error_message(status, detail)))

    async def run_context(self, facts: dict[str, Any]) -> None:
        """Say what is given until the context ends (``end``) or fails; ``_done`` sends ``isFinal``."""
        writer = asyncio.ensure_future(self._write(facts))
        watcher = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait((writer, watcher), return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                watcher.result()  # an idle context raises; a drained one has been told to say the rest
                await asyncio.wait((writer,))
            writer.result()
        finally:
            for task in (writer, watcher):
                task.cancel()
            for task in (writer, watcher):
                with contextlib.suppress(BaseException):
                    await task
            await self.live.aclose()

    async def add(self, message: Message, facts: dict[str, Any]) -> None:
        """Text, a flush, or both, as the native session takes them."""
        async with self.turn_lock:
            if self.ended:
                return
            text = message.text or ""
            if text.strip():
                self.flushed = False
            if message.flush:
                self.flushed = True  # (asked for: an auto_mode phrase does not count, see ``end``)
            if text.strip() or not message.flush:
                say_now = message.flush or (self.connection.query.auto_mode and bool(text.strip()))
                await self._handle(ClientMessage(type="speak", text=text, flush=say_now), facts)
            else:
                await self._handle(ClientMessage(type="flush"), facts)

    async def end(self, *, interrupted: bool) -> None:
        """No more text: say what was given (its last words too), or with ``interrupted`` drop what is not
        yet sent; then ``isFinal``."""
        async with self.turn_lock:
            if self.ended:
                return
            if interrupted:
                async with self.send_lock:
                    self.drop_unsent()
                self.ended = True
                self.live.end()
            else:
                await self._finish()


class _Connection:
    """One socket: its contexts (one on ``stream-input``), the reader that routes messages to them."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        chorus: ServiceState,
        pipeline: SpeechPipeline,
        params: SynthesisParams,
        fmt: str,
        rate: int | None,
        query: ElevenLabsQuery,
        multi: bool,
        keys: tuple[str, ...],
    ) -> None:
        self.socket, self.chorus, self.pipeline, self.params = socket, chorus, pipeline, params
        self.fmt, self.rate, self.query, self.multi = fmt, rate, query, multi
        self.contexts: dict[str, _Context] = {}
        self.tasks: set[asyncio.Future[None]] = set()
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.closing = False
        self.finished: list[_Context] = []
        #: When the client last sent a message (with no context open, the socket itself can go idle).
        self.last_message = time.monotonic()
        # A key in a header is checked at once; without one, the first message may carry it.
        self.auth_problem = api_key_problem(socket, bearer=True, others=keys, where="the xi-api-key header")
        if self.auth_problem is not None and keys:
            raise Refused(401, self.auth_problem, POLICY_VIOLATION)

    async def run(self, facts: dict[str, Any]) -> None:
        reader = asyncio.ensure_future(self._read(facts))
        drain = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait((reader, drain, self.failure), return_when=asyncio.FIRST_COMPLETED)
            if self.failure.done():
                raise self.failure.result()
            for watched in (reader, drain):
                if watched in done and watched.exception() is not None:
                    raise watched.exception()  # type: ignore[misc]
            if reader in done and not self.closing:
                return  # the client went away
            # Closing (or drained: each context says what it was given): wait for every context to end.
            self.closing = True
            if self.tasks:
                pending = asyncio.gather(*self.tasks)
                await asyncio.wait((pending, self.failure), return_when=asyncio.FIRST_COMPLETED)
                if self.failure.done():
                    raise self.failure.result()
            code = _RESTART if self.chorus.phase is Phase.DRAINING else _NORMAL
            with contextlib.suppress(Exception):
                await self.socket.close(code)
        except Refused as refused:
            await _end(self.socket, refused, drain=reader.done())  # (drained only where nothing else reads)
        except Exception as exc:
            if not _gone(exc):
                log.error("ElevenLabs session failed", exc_info=exc)
                await _end(self.socket, Refused(500, "internal error", 1011))
        finally:
            for task in (reader, drain, *self.tasks):
                task.cancel()
            for task in (reader, drain, *self.tasks):
                with contextlib.suppress(BaseException):
                    await task
            for context in [*self.contexts.values(), *self.finished]:
                await context.live.aclose()
            everything = [*self.contexts.values(), *self.finished]
            facts.update(
                audio_s=round(sum(c.samples / c.source_rate for c in everything), 3),
                sentences=sum(c.sentences for c in everything),
                late_s=round(sum(c.late_s for c in everything), 3),
                contexts=len(everything),
            )

    async def _watch(self) -> None:
        """Returns once the server drains (each context then says what it was given); with no context open,
        a socket without a message for ``inactivity_timeout`` is closed (each context watches its own)."""
        timeout_s = float(self.query.inactivity_timeout)
        # The phase is set by a signal handler and the lifespan, not through an event (as in service.live).
        while self.chorus.phase is not Phase.DRAINING:
            await asyncio.sleep(min(0.25, timeout_s / 4))
            if not self.contexts and time.monotonic() - self.last_message > timeout_s:
                raise Refused(408, f"no message for {timeout_s:g} s: the socket is closed", POLICY_VIOLATION)
        self.closing = True

    async def _read(self, facts: dict[str, Any]) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            self.last_message = time.monotonic()
            data = event.get("text") or event.get("bytes") or b""
            assert isinstance(data, (str, bytes))
            try:
                message = msgspec.json.decode(data, type=Message)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                raise Refused(400, f"message: {exc}", POLICY_VIOLATION) from None
            if self.auth_problem is not None:
                self.auth_problem = api_key_problem(
                    self.socket, bearer=True, others=message.keys(), where="the xi-api-key header or first message"
                )
                if self.auth_problem is not None:
                    raise Refused(401, self.auth_problem, POLICY_VIOLATION)
            if self.closing:
                continue  # the socket is ending (or the server draining): nothing more is taken
            if not await self._route(message, facts):
                return

    async def _route(self, message: Message, facts: dict[str, Any]) -> bool:
        """Act on one message; False once the socket takes no more."""
        key = (message.context_id or _DEFAULT_CONTEXT) if self.multi else _DEFAULT_CONTEXT
        if message.close_socket:
            for each in list(self.contexts.values()):
                await each.end(interrupted=False)
            self.closing = True
            return False
        current = self.contexts.get(key)
        if message.close_context:
            if current is not None:
                await current.end(interrupted=not current.flushed)
            return True
        if message.text == "" and not message.flush:
            if not self.multi:  # the end of the stream: say the rest, then isFinal and close
                if current is not None:
                    await current.end(interrupted=False)
                self.closing = True
                return False
            alive: list[_Context | None] = list(self.contexts.values()) if message.context_id is None else [current]
            for kept in alive:
                if kept is not None:
                    kept.last_activity = time.monotonic()  # a keep-alive
            return True
        if current is None:
            if len(self.contexts) >= MAX_CONTEXTS:
                detail = f"{MAX_CONTEXTS} contexts are open on this socket: close one (close_context) first"
                await self.socket.send_json({**_error_message(429, detail), "contextId": key})
                return True
            current = self._start(key, message, facts)
        await current.add(message, facts)
        return True

    def _start(self, key: str, message: Message, facts: dict[str, Any]) -> _Context:
        params = self.params
        if message.voice_settings is not None and message.voice_settings.speed is not None:
            params = replace(params, speed=message.voice_settings.speed)
        context = _Context(self, key if self.multi else None, params)
        self.contexts[key] = context
        task = asyncio.ensure_future(context.run_context(facts))
        self.tasks.add(task)

        def ended(done: asyncio.Future[None]) -> None:
            self.tasks.discard(done)
            if self.contexts.get(key) is context:
                del self.contexts[key]  # the id may be used again for a new context
            self.finished.append(context)
            if not done.cancelled() and done.exception() is not None and not self.failure.done():
                self.failure.set_result(done.exception())  # type: ignore[arg-type]

        task.add_done_callback(ended)
        return context


def _error_message(status: int, detail: str) -> dict[str, Any]:
    kinds = {400: "invalid_request", 401: "invalid_api_key", 408: "inactivity_timeout", 422: "invalid_text",
             429: "rate_limited", 503: "unavailable"}  # fmt: skip
    return {"error": kinds.get(status, "internal_error"), "message": detail, "code": status}


def _gone(exc: BaseException) -> bool:
    from litestar.exceptions import WebSocketDisconnect

    return isinstance(exc, WebSocketDisconnect)


async def _end(socket: WebSocket[Any, Any, Any], refused: Refused, *, drain: bool = False) -> None:
    """Say why the socket ends, then close it (a client already gone is fine; ``drain``: ``close_after``)."""
    message = {**_error_message(refused.status, refused.detail), **refused.extra}
    await close_after(socket, message, refused.close_code, refused.detail, drain=drain)
