"""From text to audio chunks through the batcher: whole requests and streams.

Text is cut into sentence chunks (``inference.text``); every chunk becomes one or more batch jobs, so the
chunks of many requests share batches and a long request cannot starve short ones. A stream submits its
chunks progressively: its first chunk enters a batch alone (first audio after one chunk's time, not the
whole text's), later ones two, four, eight at a time, with a bounded number in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from inference.backends.base import Backend, SynthesisJob, SynthesisParams, Voiced
from inference.batcher import BatchGroup, Completed, MicroBatcher
from inference.errors import InvalidTextError, QueueFullError
from inference.offload import off_loop
from inference.text import split_sentences
from inference.text.lexicon import Lexicon
from inference.text.ssml import Segment, SsmlText

__all__ = ["Chunk", "LiveSpeech", "SpeechPipeline", "SpeechResult", "Spoken", "WordTime"]

_MAX_SEED = 2**63 - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: Text up to this long is prepared (sentences, phonemes) on the event loop, longer text in a worker thread.
#: A thread buys no parallelism here: the frontends are Python, and Piper's espeak-ng bridge holds the GIL
#: while it phonemizes. It costs a hand-off each way and a thread contending for the GIL, so only text long
#: enough to hold up the loop's other requests for a while goes there.
_INLINE_PREPARE_CHARS = 400
_MIN_SPEED, _MAX_SPEED = 0.25, 4.0
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Sentence:
    """One sentence chunk to prepare, with its own parameters (an SSML rate) and the silence around it."""

    text: str
    params: SynthesisParams
    pause_before_s: float = 0.0
    pause_after_s: float = 0.0


async def _prepared(chars: int, prepare: Callable[..., _T], *args: Any) -> _T:
    """``prepare(*args)``: right here for up to ``_INLINE_PREPARE_CHARS`` of text, else in a worker thread."""
    if chars <= _INLINE_PREPARE_CHARS:
        return prepare(*args)
    return await off_loop(prepare, *args)


def job_seed(seed: int, index: int) -> int:
    """The seed of a request's ``index``-th job: distinct per sentence, identical streamed or not."""
    return (seed + index * _GOLDEN) & _MAX_SEED


@dataclass(frozen=True, slots=True)
class WordTime:
    """When a word is said: seconds from the start of the audio it is part of."""

    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Chunk:
    """A job's audio as it is sent (edges softened, pauses added), and its words' times within it."""

    audio: npt.NDArray[np.float32]
    words: tuple[WordTime, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """A whole request's audio and the facts about the batches that made it."""

    chunks: list[npt.NDArray[np.float32]]
    batch_size: int
    queue_s: float
    inference_s: float
    #: Characters of the text the model cannot say (``Backend.unsayable``), found while preparing.
    unsaid: str = ""
    #: With ``SynthesisParams.timestamps``: every word's time in the whole audio.
    words: tuple[WordTime, ...] = ()

    @property
    def samples(self) -> int:
        """Total length in samples."""
        return sum(len(c) for c in self.chunks)


class SpeechPipeline:
    """The engine's front door: text in, audio chunks out, through one backend and its batcher."""

    def __init__(
        self,
        backend: Backend,
        batcher: MicroBatcher[SynthesisJob, Voiced],
        *,
        max_chunk_chars: int = 400,
        stream_window: int = 16,
        request_timeout_s: float = 300.0,
        model_key: str = "",
        lexicon: Lexicon | None = None,
    ) -> None:
        # The segmenter is imported now so that a broken install fails the load (503), not each request.
        import sentencex  # noqa: F401

        self.backend = backend
        self.batcher = batcher
        self.max_chunk_chars = max_chunk_chars
        self.stream_window = max(1, stream_window)
        self.request_timeout_s = request_timeout_s
        #: Stamped on every job, so that a batcher shared by several models knows whose job it is.
        self.model_key = model_key
        #: Words said differently (CHORUS_LEXICON), applied to every sentence before the model's frontend.
        self.lexicon = lexicon

    def unsayable(self, text: str) -> str:
        """The characters of ``text`` the model cannot say, once the lexicon has replaced its words."""
        return self.backend.unsayable(self.lexicon.apply(text) if self.lexicon is not None else text)

    # ------------------------------------------------------------------ preparation

    def _sentences(self, text: str | SsmlText, params: SynthesisParams, language: str) -> list[_Sentence]:
        """The sentence chunks of a text, or of each SSML segment (at its rate, breaks kept as pauses)."""
        segments = text.segments if isinstance(text, SsmlText) else (Segment(text),)
        if self.lexicon is not None:
            segments = tuple(replace(s, text=self.lexicon.apply(s.text)) for s in segments)
        out: list[_Sentence] = []
        for segment in segments:
            speed = min(_MAX_SPEED, max(_MIN_SPEED, params.speed * segment.rate))
            segment_params = params if speed == params.speed else replace(params, speed=speed)
            parts = split_sentences(segment.text, language, self.max_chunk_chars)
            for i, sentence in enumerate(parts):
                before = segment.pause_before_s if i == 0 else 0.0
                after = segment.pause_after_s if i == len(parts) - 1 else 0.0
                out.append(_Sentence(sentence, segment_params, before, after))
        return out

    def _prepare_sentence(
        self, sentence: str, params: SynthesisParams, first_index: int, pauses: tuple[float, float] = (0.0, 0.0)
    ) -> list[SynthesisJob]:
        try:
            jobs = self.backend.prepare(sentence, params)
        except InvalidTextError:
            return []  # a sentence of only emoji among real ones is skipped, not fatal
        last = len(jobs) - 1
        return [
            replace(
                job,
                params=replace(job.params, seed=job_seed(params.seed, first_index + i)),
                model=self.model_key,
                pause_before_s=pauses[0] if i == 0 else 0.0,
                pause_after_s=pauses[1] if i == last else 0.0,
            )
            for i, job in enumerate(jobs)
        ]

    def _prepare_next(self, pending: deque[_Sentence], first_index: int) -> list[SynthesisJob]:
        """Jobs of the next pending sentence. One with nothing sayable hands its pauses on to the sentence
        after it, so an SSML break beside an emoji-only stretch is kept (alike whole and streamed)."""
        sentence = pending.popleft()
        jobs = self._prepare_sentence(
            sentence.text, sentence.params, first_index, (sentence.pause_before_s, sentence.pause_after_s)
        )
        carried = sentence.pause_before_s + sentence.pause_after_s
        if not jobs and carried and pending:
            pending[0] = replace(pending[0], pause_before_s=pending[0].pause_before_s + carried)
        return jobs

    def prepare(self, text: str | SsmlText, params: SynthesisParams, language: str) -> list[list[SynthesisJob]]:
        """Jobs per sentence (blocking: call it off the event loop). Raises when nothing can be said."""
        out: list[list[SynthesisJob]] = []
        count = 0
        pending = deque(self._sentences(text, params, language))
        while pending:
            jobs = self._prepare_next(pending, count)
            if jobs:
                out.append(jobs)
                count += len(jobs)
        if not out:
            raise InvalidTextError
        return out

    # ------------------------------------------------------------------ whole requests

    async def synthesize(self, text: str | SsmlText, params: SynthesisParams, language: str) -> SpeechResult:
        """All chunks of a request, admitted together (or refused together with ``QueueFullError``)."""
        deadline = time.monotonic() + self.request_timeout_s
        self.batcher.check_admission()  # overload is refused before the text costs any work
        plain = text.text if isinstance(text, SsmlText) else text
        unsaid, per_sentence = await _prepared(len(plain), self._unsaid_and_prepare, text, params, language)
        jobs = [job for group in per_sentence for job in group]
        done = await self.batcher.run(jobs, deadline=deadline)
        return replace(_result(jobs, done, self.backend.info.sample_rate_hz), unsaid=unsaid)

    def _unsaid_and_prepare(
        self, text: str | SsmlText, params: SynthesisParams, language: str
    ) -> tuple[str, list[list[SynthesisJob]]]:
        plain = text.text if isinstance(text, SsmlText) else text
        return self.unsayable(plain), self.prepare(text, params, language)

    # ------------------------------------------------------------------ live sessions

    def live(self, params: SynthesisParams, language: str) -> LiveSpeech:
        """A session that says sentences as they are given (text arriving in pieces), in order."""
        return LiveSpeech(self, params, language)

    # ------------------------------------------------------------------ streams

    async def open_stream(
        self, text: str | SsmlText, params: SynthesisParams, language: str
    ) -> AsyncIterator[Completed[Chunk]]:
        """Admit the first chunk now (so overload is refused before any byte is sent) and return the rest
        as an async iterator of chunk results, in text order."""
        deadline = time.monotonic() + self.request_timeout_s
        self.batcher.check_admission()
        plain = text.text if isinstance(text, SsmlText) else text
        pending = deque(await _prepared(len(plain), self._sentences, text, params, language))
        first: list[SynthesisJob] = []
        while pending and not first:
            first = await _prepared(len(pending[0].text), self._prepare_next, pending, 0)
        if not first:
            raise InvalidTextError
        group = BatchGroup(progressive=True)
        head = self.batcher.enqueue(first, group=group, deadline=deadline)  # QueueFullError here becomes a 429
        return self._follow((asyncio.ensure_future(head.wait()), first), group, pending, len(first), deadline)

    async def _submit(
        self, jobs: list[SynthesisJob], group: BatchGroup, deadline: float, needed_by: float | None = None
    ) -> list[Completed[Voiced]]:
        while True:
            try:
                return await self.batcher.run(jobs, group=group, deadline=deadline, needed_by=needed_by)
            except QueueFullError as exc:
                # Mid-stream the answer has started: wait for room rather than cut the audio short.
                if time.monotonic() + exc.retry_after_s > deadline:
                    raise
                await asyncio.sleep(min(exc.retry_after_s, 1.0))

    async def _follow(
        self,
        head: tuple[asyncio.Future[list[Completed[Voiced]]], list[SynthesisJob]],
        group: BatchGroup,
        pending: deque[_Sentence],
        next_index: int,
        deadline: float,
    ) -> AsyncIterator[Completed[Chunk]]:
        in_flight: deque[tuple[asyncio.Future[list[Completed[Voiced]]], list[SynthesisJob]]]
        in_flight = deque([head])
        rate_hz = self.backend.info.sample_rate_hz
        try:
            while in_flight:
                while pending and len(in_flight) < self.stream_window:
                    jobs = await _prepared(len(pending[0].text), self._prepare_next, pending, next_index)
                    if jobs:
                        next_index += len(jobs)
                        in_flight.append((asyncio.ensure_future(self._submit(jobs, group, deadline)), jobs))
                future, jobs = in_flight.popleft()
                for job, done in zip(jobs, await future, strict=True):
                    chunk = as_sent(job, done.value, rate_hz)
                    yield Completed(chunk, done.batch_size, done.queue_s, done.inference_s, done.batch_id)
        finally:
            # The client went away (or the stream failed): drop every chunk not yet synthesized.
            for future, _ in in_flight:
                future.cancel()
            for future, _ in in_flight:
                with contextlib.suppress(BaseException):
                    await future


@dataclass(frozen=True, slots=True)
class Spoken:
    """One item of a live session, in the order given: a sentence's audio, or a mark passed through."""

    #: What the caller gave with it: the sentence's text, or the mark.
    tag: object
    #: The sentence's audio (edges softened, pauses added); empty for a mark or an unsayable sentence.
    audio: npt.NDArray[np.float32]
    batch_size: int = 0
    #: ``LiveSpeech.generation`` when it was given: a ``clear`` since then makes it stale.
    generation: int = 0
    #: With ``SynthesisParams.timestamps``: its words' times within ``audio``.
    words: tuple[WordTime, ...] = ()


class LiveSpeech:
    """Sentences said as they are given (a voice agent's text, arriving while a language model writes it),
    each submitted to the batcher at once and handed back in the order given, with marks in between.

    The first sentence is admitted or refused (``QueueFullError``) at once; later ones wait for room
    rather than cut a conversation short. ``clear`` drops everything not yet handed back (a caller that
    interrupts the speech): jobs still queued are never synthesized. Event loop only.
    """

    def __init__(self, pipeline: SpeechPipeline, params: SynthesisParams, language: str) -> None:
        self.pipeline = pipeline
        self.params = params
        self.language = language
        #: Bumped by ``clear``; items given before carry the old value.
        self.generation = 0
        self._index = 0
        self._admitted = False
        self._order: asyncio.Queue[_LiveItem | None] = asyncio.Queue()
        self._futures: set[asyncio.Future[list[Completed[Voiced]]]] = set()

    async def say(self, text: str, tag: object = None, needed_by: float | None = None) -> None:
        """Queue ``text`` (a sentence or more) to be said after everything given before it; ``needed_by``
        is when the listener's audio runs out (``time.monotonic()``; ``MicroBatcher.enqueue``)."""
        pipeline = self.pipeline
        if not self._admitted:
            pipeline.batcher.check_admission()  # a session is refused before its text costs any work
        generation = self.generation
        jobs = await _prepared(len(text), self._prepare, text)
        if generation != self.generation:
            return  # cleared while it was being prepared
        if not jobs:
            self._order.put_nowait(_LiveItem(tag, generation, None, []))
            return
        deadline = time.monotonic() + pipeline.request_timeout_s
        if not self._admitted:
            pending = pipeline.batcher.enqueue(jobs, deadline=deadline, needed_by=needed_by)  # refused: raises
            self._admitted = True
            future = asyncio.ensure_future(pending.wait())
        else:
            future = asyncio.ensure_future(pipeline._submit(jobs, BatchGroup(), deadline, needed_by))
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        self._order.put_nowait(_LiveItem(tag, generation, future, jobs))

    def _prepare(self, text: str) -> list[SynthesisJob]:
        jobs: list[SynthesisJob] = []
        pending = deque(self.pipeline._sentences(text, self.params, self.language))
        while pending:
            jobs += self.pipeline._prepare_next(pending, self._index + len(jobs))
        self._index += len(jobs)
        return jobs

    @property
    def busy(self) -> bool:
        """Whether anything given is still to be handed back."""
        return bool(self._futures) or not self._order.empty()

    def mark(self, tag: object) -> None:
        """Hand ``tag`` back once everything given before it has been."""
        self._order.put_nowait(_LiveItem(tag, self.generation, None, []))

    def end(self) -> None:
        """No more text: the iteration stops after what was given."""
        self._order.put_nowait(None)

    def clear(self) -> None:
        """Drop everything given and not yet handed back; its queued jobs are never synthesized."""
        self.generation += 1
        for future in list(self._futures):
            future.cancel()
        while not self._order.empty():
            item = self._order.get_nowait()
            if item is None:
                self._order.put_nowait(None)  # an end stays an end
                break

    async def aclose(self) -> None:
        """Drop what is queued and wait until its jobs are out of the batcher."""
        self.clear()
        for future in list(self._futures):
            with contextlib.suppress(BaseException):
                await future

    async def __aiter__(self) -> AsyncIterator[Spoken]:
        rate_hz = self.pipeline.backend.info.sample_rate_hz
        while (item := await self._order.get()) is not None:
            if item.future is None:
                yield Spoken(item.tag, _NO_AUDIO, generation=item.generation)
                continue
            await asyncio.wait((item.future,))
            if item.future.cancelled() or item.generation != self.generation:
                continue  # cleared
            done = item.future.result()  # a failed synthesis or a passed deadline raises here
            chunks = [as_sent(job, d.value, rate_hz) for job, d in zip(item.jobs, done, strict=True)]
            yield Spoken(
                item.tag,
                np.concatenate([c.audio for c in chunks]) if len(chunks) > 1 else chunks[0].audio,
                max(d.batch_size for d in done),
                item.generation,
                joined_words(chunks, rate_hz),
            )


@dataclass(frozen=True, slots=True)
class _LiveItem:
    tag: object
    generation: int
    future: asyncio.Future[list[Completed[Voiced]]] | None
    jobs: list[SynthesisJob]


_NO_AUDIO = np.zeros(0, dtype=np.float32)


def soften_edges(
    audio: npt.NDArray[np.float32], rate_hz: int, fade_s: float = 0.004, *, in_place: bool = False
) -> npt.NDArray[np.float32]:
    """Fade a chunk's first and last few milliseconds in and out (raised cosine).

    Sentences already start and end near silence; the fade makes sure no join between two chunks can
    step (click), streamed or not. ``in_place``: into ``audio`` itself when it may be written (the caller
    owns it), sparing a copy of the whole chunk to change a few milliseconds of it.
    """
    n = min(int(rate_hz * fade_s), len(audio) // 2)
    if n < 2:
        return audio
    ramp = _ramp(n)
    out = audio if in_place and audio.flags.writeable else audio.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def as_sent(job: SynthesisJob, voiced: Voiced, rate_hz: int) -> Chunk:
    """A job's audio as it is sent (edges softened, pauses added), with its words' times when it has them.

    ``voiced`` is handed over: its audio is the job's own (see ``Voiced``) and is faded where it lies."""
    audio = with_pauses(job, soften_edges(voiced.audio, rate_hz, in_place=True), rate_hz)
    if not job.words or voiced.token_samples is None:
        return Chunk(audio)
    # A token's audio starts where the durations of the tokens before it end (the model's own boundaries).
    bounds = np.concatenate(([0], np.cumsum(voiced.token_samples))) + round(job.pause_before_s * rate_hz)
    words = tuple(
        WordTime(w.text, _seconds(int(bounds[w.first]), rate_hz), _seconds(int(bounds[w.end]), rate_hz))
        for w in job.words
    )
    return Chunk(audio, words)


def joined_words(chunks: Sequence[Chunk], rate_hz: int) -> tuple[WordTime, ...]:
    """The words of consecutive chunks, timed from the start of the first."""
    if len(chunks) == 1:
        return chunks[0].words
    out: list[WordTime] = []
    offset = 0
    for chunk in chunks:
        shift = offset / rate_hz
        out.extend(WordTime(w.word, round(w.start_s + shift, 3), round(w.end_s + shift, 3)) for w in chunk.words)
        offset += len(chunk.audio)
    return tuple(out)


def _seconds(samples: int, rate_hz: int) -> float:
    return round(samples / rate_hz, 3)


def with_pauses(job: SynthesisJob, audio: npt.NDArray[np.float32], rate_hz: int) -> npt.NDArray[np.float32]:
    """``audio`` with the silence an SSML ``<break>`` asked for before and after it."""
    if not job.pause_before_s and not job.pause_after_s:
        return audio
    before = np.zeros(round(job.pause_before_s * rate_hz), dtype=np.float32)
    after = np.zeros(round(job.pause_after_s * rate_hz), dtype=np.float32)
    return np.concatenate([before, audio, after])


@functools.lru_cache(maxsize=64)
def _ramp(n: int) -> npt.NDArray[np.float32]:
    """The raised-cosine fade of ``n`` samples (read-only: shared by every call)."""
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32))).astype(np.float32)
    ramp.flags.writeable = False
    return ramp


def _result(jobs: Sequence[SynthesisJob], done: Sequence[Completed[Voiced]], rate_hz: int) -> SpeechResult:
    batches = {d.batch_id: d.inference_s for d in done}
    chunks = [as_sent(job, d.value, rate_hz) for job, d in zip(jobs, done, strict=True)]
    return SpeechResult(
        chunks=[c.audio for c in chunks],
        batch_size=max(d.batch_size for d in done),
        queue_s=max(d.queue_s for d in done),
        inference_s=sum(batches.values()),
        words=joined_words(chunks, rate_hz),
    )
