"""``WebSocket /v1/audio/speech/stream-input``: text in pieces, speech back sentence by sentence.

A voice agent streams a language model's answer in as it is written; each sentence is synthesized as soon
as it is complete (``SentenceBuffer``), in the batcher beside every other request, and its audio goes
back in order. The protocol (README, "Live text in"):

* configuration in the query string: ``model``, ``voice``, ``speed``, ``temperature``, ``seed``,
  ``response_format`` (default ``pcm``), ``sample_rate``, ``text_format`` (``markdown`` or ``plain``),
  ``chunking`` (``auto``, ``sentence`` or ``clause``: below), ``settle_s`` (a last sentence that ends with
  its full stop is said once no text has come for this long), ``timestamps`` (``word``: each sentence
  event lists its words' times in the session's audio);
* client messages, JSON text frames: ``{"type": "speak", "text": "..."}`` (``"flush": true``: then flush),
  ``{"type": "flush"}`` (say what is waiting now), ``{"type": "clear"}`` (the caller interrupted: drop
  what is not yet sent), ``{"type": "close"}`` (say the rest, then end);
* server messages: for each sentence ``{"type": "sentence", ...}`` then its audio as binary frames;
  ``flushed``, ``cleared``, ``done``; ``error`` with ``status_code`` and ``detail`` (a refused message
  leaves the session open; a refused session, overload or a failed synthesis ends it).

Chunking: with ``auto`` (the default) a sentence is handed on whole while the listener has audio in hand,
but when it is about to run out (the audio sent so far, played in real time, plus what is being
synthesized, ends sooner than a sentence takes to come back) the settled clauses of the sentence being
written go on at once (``SentenceBuffer.take_clause``): first audio sooner, fewer gaps after a short
sentence, at some cost in prosody where it is cut. ``sentence``: always whole sentences (the audio equals
``/generate``'s); ``clause``: every settled clause at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np
from litestar import WebSocket, websocket
from litestar.exceptions import HTTPException, WebSocketDisconnect

from inference.audio.formats import StreamEncoder
from inference.backends.base import SynthesisParams
from inference.errors import InferenceError, QueueFullError
from inference.speech import LiveSpeech, SpeechPipeline, Spoken
from inference.text.segment import SentenceBuffer
from service.auth import api_key_problem
from service.errors import inference_status
from service.schemas import SampleRate, Seed, Speed, Temperature
from service.state import Phase, ServiceState
from service.synthesis import (
    check_format,
    check_timestamps,
    clean_text,
    plain_text,
    random_seed,
    ready_pipeline,
    word_events,
)

__all__ = [
    "POLICY_VIOLATION", "TRY_AGAIN_LATER", "ClientMessage", "LiveConfig", "LiveSession", "Refused", "Said",
    "close_after", "speech_stream_input",
]  # fmt: skip

#: Close codes (RFC 6455 and IANA's registry).
_NORMAL, POLICY_VIOLATION, _INTERNAL, _RESTART, TRY_AGAIN_LATER = 1000, 1008, 1011, 1012, 1013
#: A refused key, an idle session: 4000 + the HTTP status, Litestar's convention for WebSocket errors.
_UNAUTHORIZED, _IDLE = 4401, 4408
#: Longest ``text`` one message may carry (longer: send it in pieces).
MAX_MESSAGE_CHARS = 5000
#: How often an open session looks for a SIGTERM drain (then it says what it has and ends), idleness, and
#: (``auto`` chunking) a listener running low while the text has stopped coming mid-sentence.
_WATCH_S = 0.25
_EMPTY = np.zeros(0, dtype=np.float32)
log = logging.getLogger("chorus")


class LiveConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The session's settings, from the query string."""

    model: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    voice: Annotated[str, msgspec.Meta(max_length=200)] = "default"
    speed: Speed = 1.0
    temperature: Temperature | None = None
    seed: Seed | None = None
    response_format: Annotated[str, msgspec.Meta(max_length=10)] = "pcm"
    sample_rate: SampleRate | None = None
    text_format: Literal["markdown", "plain"] = "markdown"
    chunking: Literal["auto", "sentence", "clause"] = "auto"
    #: A last sentence that ends with its full stop (question mark, ...) is said once no text has come for
    #: this long, without waiting for a word after it or a flush ("Let me check that." before a tool call).
    settle_s: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.3
    #: ``word``: every ``sentence`` event carries ``words``, each with its start and end in the session's audio.
    timestamps: Literal["none", "word"] = "none"


class ClientMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One message from the client."""

    type: Literal["speak", "flush", "clear", "close"]
    text: str = ""
    #: ``speak`` only: then say what is waiting at once, as a ``flush`` message would.
    flush: bool = False


class _Flushed:
    """The mark a flush puts in the session: answered once the audio before it has gone out."""


class Said(NamedTuple):
    """What a sentence's event reports: its text as sent, the characters the model cannot say, and whether
    it is a clause that the next one continues; when it was handed on, and how many characters it was."""

    text: str
    unsaid: str
    continues: bool
    given_at: float
    chars: int


class Listener:
    """What a session can tell of its listener's audio in hand, for ``auto`` chunking: the audio sent,
    played in real time from when it went out (a gap restarts the clock), plus what the text handed on and
    not yet sent will say. Times are ``time.monotonic()`` seconds."""

    #: A clause goes on when the audio in hand is under this plus twice the time a sentence has lately
    #: taken to come back (handed on to sent).
    LOW_WATER_S = 0.5
    #: Until the session has sent audio: seconds of speech per character (about 15 characters a second)
    #: and the time a sentence takes to come back.
    SECONDS_PER_CHAR = 1 / 15
    FIRST_LATENCY_S = 0.5

    def __init__(self) -> None:
        self.playing_until = 0.0
        self.queued_chars = 0
        self.sent_chars = 0
        self.sent_s = 0.0
        self.latency_s = self.FIRST_LATENCY_S

    def given(self, chars: int) -> None:
        """Text handed on to be said."""
        self.queued_chars += chars

    def dropped(self, chars: int) -> None:
        """Text handed on that will not be said after all."""
        self.queued_chars = max(0, self.queued_chars - chars)

    def sent(self, chars: int, seconds: float, given_at: float, now: float) -> float:
        """The audio of ``chars`` characters handed on at ``given_at`` goes out at ``now``. Returns how long
        the listener has waited for it although its text was given before their audio ran out: the
        engine's lateness (a gap while the text was still being written is not counted)."""
        late = now - self.playing_until if given_at < self.playing_until < now else 0.0
        self.dropped(chars)
        self.sent_chars += chars
        self.sent_s += seconds
        self.playing_until = max(self.playing_until, now) + seconds
        self.latency_s += 0.3 * (now - given_at - self.latency_s)
        return late

    def cleared(self, now: float) -> None:
        """The caller interrupted: what was sent is not listened to, what was handed on is dropped."""
        self.queued_chars = 0
        self.playing_until = now

    def in_hand(self, now: float) -> float:
        """Seconds of audio the listener has, or will have once what was handed on is sent."""
        per_char = self.sent_s / self.sent_chars if self.sent_chars else self.SECONDS_PER_CHAR
        return max(0.0, self.playing_until - now) + self.queued_chars * per_char

    def running_low(self, now: float) -> bool:
        """Whether the audio in hand may run out before a sentence written now can come back."""
        return self.in_hand(now) < self.LOW_WATER_S + 2 * self.latency_s


class Refused(Exception):
    """Ends the session with an error message and a close code."""

    def __init__(self, status: int, detail: str, close_code: int, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close_code, self.extra = status, detail, close_code, extra


# The key is checked here, after the handshake, not by the guard: a guard's refusal is an HTTP 403 to the
# handshake, which a browser cannot read; an accepted socket can say why (401) and close with 4401.
@websocket("/audio/speech/stream-input", opt={"auth": False})
async def speech_stream_input(socket: WebSocket[Any, Any, Any], chorus: ServiceState) -> None:
    """Speech for text that arrives in pieces (see the module's docstring for the protocol)."""
    await socket.accept()
    facts: dict[str, Any] = socket.scope.setdefault("state", {}).setdefault("synthesis", {})
    facts.update(stream=True, live=True, text_chars=0, sentences=0, audio_s=0.0)
    try:
        if (problem := api_key_problem(socket, bearer=True)) is not None:
            raise Refused(401, problem, _UNAUTHORIZED)
        session = _open(socket, chorus)
    except Refused as refused:
        await _end(socket, refused, drain=True)  # (nothing reads the socket yet)
        return
    chorus.live_sessions += 1
    try:
        await session.run(facts)
    finally:
        chorus.live_sessions -= 1


def _open(socket: WebSocket[Any, Any, Any], chorus: ServiceState) -> LiveSession:
    from service.openai_api import pipeline_for_model, resolve_voice  # (it imports this module's router)

    try:
        config = msgspec.convert(dict(socket.query_params), LiveConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise Refused(400, f"query string: {exc}", POLICY_VIOLATION) from None
    try:
        pipeline = pipeline_for_model(chorus, config.model) if config.model else ready_pipeline(chorus)
        voice = resolve_voice(pipeline.backend.info, config.voice)
        fmt = check_format(config.response_format)
        timestamps = check_timestamps(pipeline.backend.info, config.timestamps)
    except HTTPException as exc:
        if exc.status_code == 503:  # loading, failed or draining: come back later, as Retry-After says
            retry = int((exc.headers or {}).get("Retry-After", "5"))
            raise Refused(503, exc.detail, TRY_AGAIN_LATER, retry_after_s=retry) from None
        raise Refused(exc.status_code, exc.detail, POLICY_VIOLATION) from None
    params = SynthesisParams(
        temperature=config.temperature,
        speed=config.speed,
        seed=config.seed if config.seed is not None else random_seed(),
        voice=voice,
        seeded=config.seed is not None,
        timestamps=timestamps,
    )
    return LiveSession(socket, chorus, pipeline, params, fmt, config)


class LiveSession:
    """One connection: a reader that turns messages into sentences, a writer that sends their audio."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        chorus: ServiceState,
        pipeline: SpeechPipeline,
        params: SynthesisParams,
        fmt: str,
        config: LiveConfig,
    ) -> None:
        info = pipeline.backend.info
        self.socket = socket
        self.chorus = chorus
        self.pipeline = pipeline
        self.params = params
        self.text_format = config.text_format
        self.chunking = config.chunking
        self.settle_s = config.settle_s
        self.language = info.languages[0] if info.languages else "en"
        self.buffer = SentenceBuffer(self.language, pipeline.max_chunk_chars)
        self.live: LiveSpeech = pipeline.live(params, self.language)
        self.encoder = StreamEncoder(fmt, info.sample_rate_hz, config.sample_rate)
        self.source_rate = info.sample_rate_hz
        self.samples = 0
        self.sentences = 0
        self.send_lock = asyncio.Lock()
        #: Held while a message's text is handed on, so a drain's flush cannot land in the middle of one.
        self.turn_lock = asyncio.Lock()
        self.ended = False
        self.idle_timeout_s = chorus.settings.live_idle_timeout_s
        #: When the client last sent a message or the session last sent it something.
        self.last_activity = time.monotonic()
        self.listener = Listener()
        #: Seconds the listener waited for audio whose text the engine already had (``Listener.sent``).
        self.late_s = 0.0
        #: When text last came (``settle_s`` counts from it).
        self.last_text_at = time.monotonic()

    async def run(self, facts: dict[str, Any]) -> None:
        reader = asyncio.ensure_future(self._read(facts))
        writer = asyncio.ensure_future(self._write(facts))
        watcher = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait((reader, writer, watcher), return_when=asyncio.FIRST_COMPLETED)
            if done == {watcher} and watcher.exception() is None:  # drained: the writer says the rest
                done, _ = await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if writer not in done and reader in done and reader.exception() is None and self.ended:
                await asyncio.wait((writer,))  # "close" was asked: the writer says the rest, then ends
                done = {reader, writer}
            tasks = (reader, writer, watcher)
            failures = [task.exception() for task in tasks if task in done and task.exception() is not None]
            refused = next((exc for exc in failures if isinstance(exc, Refused)), None)
            if refused is None and failures and not isinstance(failures[0], WebSocketDisconnect):
                log.error("live session failed", exc_info=failures[0])
                refused = Refused(500, "internal error", _INTERNAL)
            if refused is not None:
                await _end(self.socket, refused)
        finally:
            for task in (reader, writer, watcher):
                task.cancel()
            for task in (reader, writer, watcher):
                with contextlib.suppress(BaseException):
                    await task
            await self.live.aclose()  # a client that left costs no more synthesis
            facts.update(audio_s=round(self.samples / self.source_rate, 3), sentences=self.sentences,
                         late_s=round(self.late_s, 3))  # fmt: skip

    async def _watch(self) -> None:
        """End an idle session (408: a vanished client holds nothing for long); with ``auto`` chunking,
        when the text stops coming mid-sentence and the listener runs low, say its settled clauses; on
        SIGTERM say what the session was given and end it (close 1012), as a request would. Returns once
        drained."""
        # The phase is set by a signal handler and the lifespan, not through an event: looked at as it goes.
        poll_s = min(_WATCH_S, self.idle_timeout_s / 4)
        while self.chorus.phase is not Phase.DRAINING:
            if self.buffer.ends_with_a_stop and not self.ended:  # wake when it has settled by time
                await asyncio.sleep(min(poll_s, max(0.005, self.last_text_at + self.settle_s - time.monotonic())))
            else:
                await asyncio.sleep(poll_s)
            if self.live.busy or self.ended:
                self.last_activity = time.monotonic()
            elif time.monotonic() - self.last_activity > self.idle_timeout_s:
                raise Refused(408, f"no message for {self.idle_timeout_s:g} s: the session is closed", _IDLE)
            if self.buffer.ends_with_a_stop and time.monotonic() - self.last_text_at >= self.settle_s:
                async with self.turn_lock:  # the text has stopped after a sentence's end: it is one
                    if not self.ended and self.buffer.ends_with_a_stop:
                        await self._say(self.buffer.flush())
            if self.chunking == "auto" and self.buffer.pending and not self.ended and self._running_low():
                async with self.turn_lock:
                    if not self.ended and (clause := self.buffer.take_clause()):
                        await self._say(clause, continues=True)
        async with self.turn_lock:
            if self.ended:
                return
            try:
                await self._finish()
            except Refused as refused:  # what waited cannot be said now: say so, and end with what was
                await self._error(refused.status, refused.detail)
                self.ended = True
                self.live.end()

    async def _finish(self) -> None:
        await self._say(self.buffer.flush())
        self.ended = True
        self.live.end()

    async def _read(self, facts: dict[str, Any]) -> None:
        while True:
            message = await self._receive()
            if message is None:
                return  # the client went away
            async with self.turn_lock:
                if not await self._handle(message, facts):
                    return

    async def _handle(self, message: ClientMessage, facts: dict[str, Any]) -> bool:
        """Act on one message; False once the session takes no more."""
        if self.ended:
            await self._error(409, "the session is ending: no more text is taken")
            return True
        if message.type in ("speak", "close") and message.text:
            if len(message.text) > MAX_MESSAGE_CHARS:
                await self._error(422, f"text is {len(message.text)} characters long; the limit per message is "
                                  f"{MAX_MESSAGE_CHARS}: send it in pieces")  # fmt: skip
                return True
            facts["text_chars"] += len(message.text)
            self.last_text_at = time.monotonic()
            for sentence in self.buffer.add(message.text):
                await self._say(sentence)
            if message.type == "speak" and self._running_low() and (clause := self.buffer.take_clause()):
                await self._say(clause, continues=True)
        if message.type == "flush" or (message.type == "speak" and message.flush):
            await self._say(self.buffer.flush())
            self.live.mark(_Flushed())
        elif message.type == "clear":
            async with self.send_lock:
                self.drop_unsent()
                await self._send_json({"type": "cleared"})
        elif message.type == "close":
            await self._finish()
            return False
        return True

    def drop_unsent(self) -> None:
        """Drop everything not yet sent, text and audio (the caller interrupted)."""
        self.buffer.clear()
        self.live.clear()
        self.listener.cleared(time.monotonic())

    async def _receive(self) -> ClientMessage | None:
        """The next well-formed message; a malformed one is answered with an error and skipped."""
        while True:
            event = await self.socket.receive()
            self.last_activity = time.monotonic()
            if event["type"] == "websocket.disconnect":
                return None
            data = event.get("text")
            if not isinstance(data, str):
                await self._error(400, 'messages are JSON text frames, such as {"type": "speak", "text": "Hello."}')
                continue
            try:
                return msgspec.json.decode(data, type=ClientMessage)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._error(400, f"message: {exc}")
            except RecursionError:
                await self._error(400, "message: the JSON is nested too deeply")

    def _running_low(self) -> bool:
        """Whether a clause should go on now rather than wait for its sentence (``chunking``)."""
        if self.chunking != "auto":
            return self.chunking == "clause"
        batcher = self.pipeline.batcher
        if batcher.queue_depth >= batcher.current_max_batch_size:
            return False  # a full batch is waiting already: a clause would wait behind it, and add work
        return self.listener.running_low(time.monotonic())

    async def _say(self, sentence: str, *, continues: bool = False) -> None:
        if not sentence.strip():
            return
        try:
            text = plain_text(clean_text(sentence, len(sentence), text_format=self.text_format))
        except HTTPException:
            return  # nothing to say in this piece (only markup, only emoji): nothing to send for it
        now = time.monotonic()
        needed_by = now + self.listener.in_hand(now)  # when the listener will have heard all before it
        said = Said(sentence.strip(), self.pipeline.unsayable(text), continues, now, len(text))
        self.listener.given(said.chars)  # (before the await: the writer may send it before that returns)
        try:
            await self.live.say(text, tag=said, needed_by=needed_by)
        except QueueFullError as exc:
            raise Refused(429, str(exc), TRY_AGAIN_LATER, retry_after_s=max(1, round(exc.retry_after_s))) from None
        except InferenceError as exc:
            self.listener.dropped(said.chars)
            status = inference_status(exc)
            if status >= 500:
                raise Refused(status, str(exc), TRY_AGAIN_LATER if status == 503 else _INTERNAL) from None
            await self._error(status, str(exc))

    async def _write(self, facts: dict[str, Any]) -> None:
        await self._send_audio(self.encoder.encode(_EMPTY))  # a WAV stream's header goes out at once
        try:
            async for spoken in self.live:
                async with self.send_lock:
                    if spoken.generation != self.live.generation:
                        continue  # cleared after it was made
                    if isinstance(spoken.tag, _Flushed):
                        await self._flushed()
                        continue
                    if not len(spoken.audio):
                        if isinstance(spoken.tag, Said):  # nothing to say in it after all
                            self.listener.dropped(spoken.tag.chars)
                        continue
                    start = self._seconds()
                    said = spoken.tag
                    assert isinstance(said, Said)  # every sentence is given with one (_say)
                    self._sent(said, len(spoken.audio))
                    await self._sentence(said, spoken, start)
                    facts["batch_size"] = max(facts.get("batch_size", 0), spoken.batch_size)
        except InferenceError as exc:
            status = inference_status(exc)
            detail = "synthesis failed" if status == 500 else str(exc)
            raise Refused(status, detail, TRY_AGAIN_LATER if status == 503 else _INTERNAL) from None
        await self._send_audio(self.encoder.finish())
        await self._done()

    # What goes out, in this protocol's messages (``service.elevenlabs`` speaks another).

    async def _sentence(self, said: Said, spoken: Spoken, start: float) -> None:
        """A sentence's event, then its audio as binary frames."""
        event = {"type": "sentence", "index": self.sentences - 1, "text": said.text, "start_s": start,
                 "duration_s": round(len(spoken.audio) / self.source_rate, 3),
                 "batch_size": spoken.batch_size}  # fmt: skip
        if said.unsaid:
            event["unsaid"] = said.unsaid  # left out, as X-Unsaid-Characters reports them
        if said.continues:
            event["continues"] = True  # a clause: the next event's text goes on with its sentence
        if self.params.timestamps:
            event["words"] = word_events(spoken.words, start)
        await self._send_json(event)
        await self._send_audio(self.encoder.encode(spoken.audio))

    async def _flushed(self) -> None:
        await self._send_json({"type": "flushed", "audio_seconds": self._seconds()})

    async def _done(self) -> None:
        summary = {"type": "done", "audio_seconds": self._seconds(), "sentences": self.sentences,
                   "seed": self.params.seed, "sample_rate": self.encoder.rate_hz}  # fmt: skip
        await self._send_json(summary)
        code = _RESTART if self.chorus.phase is Phase.DRAINING else _NORMAL
        await self.socket.close(code)

    def _sent(self, said: Said, samples: int) -> None:
        """Account for a sentence whose audio goes out now."""
        self.samples += samples
        self.sentences += 1
        late = self.listener.sent(said.chars, samples / self.source_rate, said.given_at, time.monotonic())
        self.late_s += late
        self.chorus.live_late_s += late

    async def _send_audio(self, data: bytes) -> None:
        if data:
            await self.socket.send_bytes(data)
            self.last_activity = time.monotonic()

    async def _send_json(self, event: dict[str, Any]) -> None:
        await self.socket.send_json(event)
        self.last_activity = time.monotonic()  # a session still sending is not idle

    async def _error(self, status: int, detail: str) -> None:
        async with self.send_lock:
            await self._send_json({"type": "error", "status_code": status, "detail": detail})

    def _seconds(self) -> float:
        return round(self.samples / self.source_rate, 3)


async def _end(socket: WebSocket[Any, Any, Any], refused: Refused, *, drain: bool = False) -> None:
    """Say why the session ends, then close it (a client already gone is fine); ``drain``: see
    ``close_after``."""
    body = {"type": "error", "status_code": refused.status, "detail": refused.detail, **refused.extra}
    await close_after(socket, body, refused.close_code, refused.detail, drain=drain)


#: A refused socket reads what its client still sends until it has been quiet this long (at most a second).
_QUIET_S, _DRAIN_S = 0.1, 1.0


async def close_after(
    socket: WebSocket[Any, Any, Any], message: dict[str, Any], code: int, reason: str, *, drain: bool = False
) -> None:
    """Send ``message``, then close with ``code``. With ``drain`` (nothing else reads the socket), first read
    and drop what the client is still sending, until it pauses: a connection closed with unread data in it
    is reset by the TCP stack, and the client never sees the close frame. A refused key while the client's
    first messages were on their way reached it as 1006 instead of 4401 in 26 of 30 tries under granian."""
    with contextlib.suppress(Exception):
        await socket.send_json(message)
        if drain:
            async with asyncio.timeout(_DRAIN_S):
                while True:
                    event = await asyncio.wait_for(socket.receive(), _QUIET_S)
                    if event["type"] == "websocket.disconnect":
                        return
    with contextlib.suppress(Exception):
        await socket.close(code, reason[:120])
