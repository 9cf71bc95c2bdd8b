"""The speech pipeline on the tiny real model: sentences, streams, and streamed == whole."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from inference import InvalidTextError, MicroBatcher
from inference.backends.base import SynthesisJob, SynthesisParams, Voiced, timed_synthesis
from inference.speech import SpeechPipeline, as_sent, soften_edges
from inference.text.ssml import parse_ssml

NUMBERS = "one two three four five six seven eight nine ten"
TEN_SENTENCES = " ".join(f"This is sentence number {w} of the text." for w in NUMBERS.split(" "))


@pytest.fixture
async def pipeline(tiny_backend: Any) -> AsyncIterator[tuple[SpeechPipeline, list[int]]]:
    sizes: list[int] = []

    def run(jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        sizes.append(len(jobs))
        return timed_synthesis(tiny_backend)(jobs)

    batcher: MicroBatcher[SynthesisJob, Voiced] = MicroBatcher(
        run, max_batch_size=16, max_queue_size=64, length_of=lambda job: job.length
    )
    batcher.start().result(timeout=10)
    yield SpeechPipeline(tiny_backend, batcher, max_chunk_chars=200, stream_window=16), sizes
    batcher.stop()


async def test_a_lone_stream_sends_its_first_sentence_alone(pipeline: tuple[SpeechPipeline, list[int]]) -> None:
    speech, sizes = pipeline
    chunks = await speech.open_stream(TEN_SENTENCES, SynthesisParams(temperature=0.0, seed=1), "en")
    received = [done.value.audio async for done in chunks]
    assert len(received) == 10
    assert sizes[0] == 1  # first audio after one sentence's synthesis, not the whole text's
    assert sizes == [1, 2, 4, 3]


async def test_streamed_audio_equals_the_whole_request(pipeline: tuple[SpeechPipeline, list[int]]) -> None:
    speech, _ = pipeline
    params = SynthesisParams(temperature=0.8, seed=77)
    whole = await speech.synthesize(TEN_SENTENCES, params, "en")
    streamed = [done.value.audio async for done in await speech.open_stream(TEN_SENTENCES, params, "en")]
    assert [len(c) for c in streamed] == [len(c) for c in whole.chunks]
    np.testing.assert_allclose(np.concatenate(streamed), np.concatenate(whole.chunks), atol=1e-4)


async def test_unpronounceable_sentences_are_skipped_but_an_empty_text_is_refused(
    pipeline: tuple[SpeechPipeline, list[int]],
) -> None:
    speech, _ = pipeline
    result = await speech.synthesize("Hello there. 🙂🙂. Goodbye now.", SynthesisParams(seed=1), "en")
    assert len(result.chunks) == 2
    with pytest.raises(InvalidTextError):
        await speech.synthesize("🙂🙂. 🙂!", SynthesisParams(seed=1), "en")
    with pytest.raises(InvalidTextError):
        await speech.open_stream("🙂🙂. 🙂!", SynthesisParams(seed=1), "en")


async def test_a_stream_closed_early_drops_its_remaining_sentences(pipeline: tuple[SpeechPipeline, list[int]]) -> None:
    speech, sizes = pipeline
    chunks = await speech.open_stream(TEN_SENTENCES * 3, SynthesisParams(seed=1), "en")
    async for _ in chunks:
        break
    await chunks.aclose()  # type: ignore[attr-defined]
    run_at_close = sum(sizes)
    await asyncio.sleep(0.3)
    assert sum(sizes) == run_at_close  # nothing more is synthesized for a stream nobody reads
    assert run_at_close <= 1 + speech.stream_window
    assert speech.batcher.jobs_dropped_abandoned >= 1


async def test_short_text_is_prepared_on_the_loop_and_long_text_in_a_thread(
    pipeline: tuple[SpeechPipeline, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.speech import _INLINE_PREPARE_CHARS

    speech, _ = pipeline
    threads: list[int] = []
    prepare = speech.backend.prepare

    def recording_prepare(text: str, params: SynthesisParams) -> list[SynthesisJob]:
        threads.append(threading.get_ident())
        return prepare(text, params)

    monkeypatch.setattr(speech.backend, "prepare", recording_prepare)
    loop_thread = threading.get_ident()
    params = SynthesisParams(seed=1)
    alone = await speech.synthesize("Hello there.", params, "en")
    together = await asyncio.gather(*(speech.synthesize("Hello there.", params, "en") for _ in range(3)))
    await speech.synthesize(parse_ssml("<speak>Hello there.</speak>"), params, "en")
    _ = [chunk async for chunk in await speech.open_stream("Hello there. Good morning.", params, "en")]
    # Alone or concurrent, whole or streamed, short text never goes to a thread (one would buy no
    # parallelism: see inference/speech.py).
    assert threads == [loop_thread] * 7
    for result in together:
        np.testing.assert_array_equal(np.concatenate(result.chunks), np.concatenate(alone.chunks))

    threads.clear()
    long_sentence = "Hello there and " * (_INLINE_PREPARE_CHARS // 16) + "goodbye now."
    assert len(long_sentence) > _INLINE_PREPARE_CHARS
    await speech.synthesize(long_sentence, params, "en")  # (a stream prepares it sentence chunk by chunk)
    assert threads
    assert loop_thread not in threads


async def test_a_full_queue_refuses_before_any_work_on_the_text(tiny_backend: Any) -> None:
    from inference import QueueFullError

    gate = threading.Event()

    def run(jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        gate.wait(10)
        return timed_synthesis(tiny_backend)(jobs)

    batcher: MicroBatcher[SynthesisJob, Voiced] = MicroBatcher(run, max_batch_size=1, max_queue_size=1)
    batcher.start().result(timeout=10)
    speech = SpeechPipeline(tiny_backend, batcher, max_chunk_chars=200, stream_window=4)
    prepared: list[str] = []  # every text the pipeline did work on: whole requests and stream sentences
    prepare, prepare_sentence = speech.prepare, speech._prepare_sentence

    def recording_prepare(text: str, params: SynthesisParams, language: str) -> list[list[SynthesisJob]]:
        prepared.append(text)
        return prepare(text, params, language)

    def recording_prepare_sentence(text: str, params: SynthesisParams, *rest: Any) -> list[SynthesisJob]:
        prepared.append(text)
        return prepare_sentence(text, params, *rest)

    speech.prepare = recording_prepare  # type: ignore[method-assign]
    speech._prepare_sentence = recording_prepare_sentence  # type: ignore[method-assign]
    params = SynthesisParams(seed=1)
    running = asyncio.ensure_future(speech.synthesize("Running now.", params, "en"))
    for _ in range(500):  # until the worker holds it and the next one waits in the queue
        if batcher.queue_depth == 0 and prepared:
            break
        await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(speech.synthesize("Waiting here.", params, "en"))
    for _ in range(500):
        if batcher.queue_depth == 1:
            break
        await asyncio.sleep(0.01)
    assert batcher.queue_depth == 1
    before = list(prepared)
    with pytest.raises(QueueFullError):
        await speech.synthesize("Refused at once.", params, "en")
    with pytest.raises(QueueFullError):
        await speech.open_stream("Refused at once, streamed.", params, "en")
    assert prepared == before  # neither refusal phonemized or split anything
    gate.set()
    await asyncio.gather(running, waiting)
    batcher.stop()


async def test_ssml_breaks_are_exact_silence_and_rates_are_speeds(pipeline: tuple[SpeechPipeline, list[int]]) -> None:
    speech, _ = pipeline
    rate = speech.backend.info.sample_rate_hz
    params = SynthesisParams(temperature=0.7, seed=5)
    plain = await speech.synthesize("Hello there. Good morning to you.", params, "en")
    marked = parse_ssml('<speak>Hello there. <break time="1.5s"/>Good morning to you.</speak>')
    ssml = await speech.synthesize(marked, params, "en")
    # The same sentences with the same per-sentence seeds, and 1.5 s of zeros between them.
    first, second = plain.chunks
    pause = round(1.5 * rate)
    expected = np.concatenate([first, np.zeros(pause, dtype=np.float32), second])
    np.testing.assert_array_equal(np.concatenate(ssml.chunks), expected)
    streamed = [done.value.audio async for done in await speech.open_stream(marked, params, "en")]
    np.testing.assert_allclose(np.concatenate(streamed), expected, atol=1e-4)  # streamed == whole, pause too

    slow = await speech.synthesize(
        parse_ssml('<speak><prosody rate="50%">Hello there.</prosody></speak>'), params, "en"
    )
    at_half_speed = await speech.synthesize("Hello there.", SynthesisParams(temperature=0.7, seed=5, speed=0.5), "en")
    np.testing.assert_array_equal(np.concatenate(slow.chunks), np.concatenate(at_half_speed.chunks))
    fastest = parse_ssml(
        '<speak><prosody rate="x-fast"><prosody rate="x-fast">Hello there.</prosody></prosody></speak>'
    )
    at_limit = await speech.synthesize(fastest, SynthesisParams(temperature=0.7, seed=5, speed=2.0), "en")
    capped = await speech.synthesize("Hello there.", SynthesisParams(temperature=0.7, seed=5, speed=4.0), "en")
    np.testing.assert_array_equal(np.concatenate(at_limit.chunks), np.concatenate(capped.chunks))  # 8x is held at 4x

    # A break beside a stretch with nothing sayable (emoji) is kept: handed on to the next sentence.
    around_emoji = parse_ssml(
        '<speak>Hello there. <break time="1s"/>🙂🙂.<break time="0.5s"/>Good morning to you.</speak>'
    )
    kept = await speech.synthesize(around_emoji, params, "en")
    assert sum(len(c) for c in kept.chunks) == len(first) + len(second) + round(1.5 * rate)
    streamed = [done.value.audio async for done in await speech.open_stream(around_emoji, params, "en")]
    np.testing.assert_allclose(np.concatenate(streamed), np.concatenate(kept.chunks), atol=1e-4)


def test_a_jobs_audio_is_faded_where_it_lies_and_a_read_only_one_is_copied() -> None:
    rate = 16_000
    job = SynthesisJob(token_ids=np.arange(3, dtype=np.int64))
    own = np.ones(rate, dtype=np.float32)
    sent = as_sent(job, Voiced(own), rate)
    assert sent.audio is own  # no copy of the whole chunk to change 4 ms at each end
    assert (own[0], own[-1], own[rate // 2]) == (0.0, 0.0, 1.0)

    kept = np.ones(rate, dtype=np.float32)
    kept.flags.writeable = False  # a backend's own buffer
    sent = as_sent(job, Voiced(kept), rate)
    assert not np.shares_memory(sent.audio, kept)
    assert (sent.audio[0], kept[0]) == (0.0, 1.0)

    alone = np.ones(rate, dtype=np.float32)
    faded = soften_edges(alone, rate)  # without in_place the caller's array stays as it was
    assert (faded[0], alone[0]) == (0.0, 1.0)
    np.testing.assert_array_equal(faded, sent.audio)
