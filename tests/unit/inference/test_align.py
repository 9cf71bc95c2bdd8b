"""Word timing: which tokens say which word, on synthetic ids and on the tiny real model's frontend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference import MicroBatcher
from inference.backends.align import BREAK, align_words
from inference.backends.base import SynthesisJob, SynthesisParams, Voiced, WordSpan, timed_synthesis
from inference.speech import SpeechPipeline

# Synthetic token ids: 0 blank (between every sound, as VITS models put them), 1 word break, 2 comma,
# 3 start, 4 end; sounds are 10 and up.
BLANK, SPACE, COMMA, START, END = 0, 1, 2, 3, 4
SILENT = {BLANK, SPACE, COMMA, START, END}


def tokens(*groups: list[int], comma_after: int = -1) -> np.ndarray:
    """``START blank s blank s blank SPACE blank s ... END`` as a VITS frontend lays a sentence out."""
    ids = [START, BLANK]
    for g, sounds in enumerate(groups):
        if g:
            ids += [SPACE, BLANK]
        for sound in sounds:
            ids += [sound, BLANK]
        if g == comma_after:
            ids += [COMMA, BLANK]
    ids.append(END)
    return np.asarray(ids, dtype=np.int64)


def align(words: list[str], expected: list[tuple[int, ...]], *jobs: np.ndarray) -> list[tuple[WordSpan, ...]]:
    return align_words(words, expected, jobs, SILENT, {BLANK}, {SPACE})


def said(job: np.ndarray, span: WordSpan) -> list[int]:
    return [t for t in job[span.first : span.end].tolist() if t not in SILENT]


def test_each_word_spans_its_own_sounds_and_the_blank_after_them() -> None:
    job = tokens([10, 11], [12], [13, 14, 15], comma_after=1)
    [spans] = align(["ab", "c,", "def"], [(10, 11), (12,), (13, 14, 15)], job)
    assert [s.text for s in spans] == ["ab", "c,", "def"]
    assert [said(job, s) for s in spans] == [[10, 11], [12], [13, 14, 15]]
    assert all(job[s.end - 1] == BLANK for s in spans)  # the blank after the last sound belongs to the word
    assert spans[1].end < spans[2].first  # the comma's pause and the break belong to no word
    assert int(job[spans[1].end]) == COMMA


def test_words_said_as_one_in_context_keep_their_own_sounds() -> None:
    # espeak-ng says "of the" as one word ("ʌvðə"): no break between the two words' sounds.
    job = tokens([10, 11, 12, 13], [14])
    [spans] = align(["of", "the", "day"], [(10, 11), (12, 13), (14,)], job)
    assert [said(job, s) for s in spans] == [[10, 11], [12, 13], [14]]


def test_a_word_said_as_several_spans_all_of_them() -> None:
    # "42" alone is "forty two": two words; in the sentence too.
    job = tokens([10], [20, 21], [22, 23], [11])
    [spans] = align(["I", "42", "ok"], [(10,), (20, 21, BREAK, 22, 23), (11,)], job)
    assert [said(job, s) for s in spans] == [[10], [20, 21, 22, 23], [11]]


def test_sounds_said_differently_in_context_go_to_the_word_between_the_same_matches() -> None:
    # "e.g." expected as "iː dʒiː" and said "for example": nothing matches, but the breaks around it do.
    job = tokens([10, 11], [30, 31, 32, 33, 34], [12])
    [spans] = align(["it", "e.g.", "on"], [(10, 11), (40, 41), (12,)], job)
    assert [said(job, s) for s in spans] == [[10, 11], [30, 31, 32, 33, 34], [12]]


def test_a_word_with_nothing_to_say_is_placed_with_no_length_where_it_stands() -> None:
    job = tokens([10], [11])
    [spans] = align(["wow", "—", "yes"], [(10,), (), (11,)], job)
    assert spans[1].first == spans[1].end == spans[0].end
    assert [said(job, s) for s in (spans[0], spans[2])] == [[10], [11]]


def test_words_go_to_the_job_their_first_sound_is_in() -> None:
    first, second = tokens([10]), tokens([11], [12])  # espeak-ng made "Dr." a sentence of its own
    spans = align(["Dr.", "Smith", "came"], [(10,), (11,), (12,)], first, second)
    assert [[s.text for s in job] for job in spans] == [["Dr."], ["Smith", "came"]]
    assert said(second, spans[1][1]) == [12]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(10, 16), min_size=0, max_size=4), min_size=1, max_size=8),
    st.lists(st.lists(st.integers(10, 16), min_size=1, max_size=5), min_size=1, max_size=8),
)
def test_spans_are_in_order_inside_their_job_and_never_overlap(
    expected: list[list[int]], heard: list[list[int]]
) -> None:
    job = tokens(*heard)
    words = [f"w{i}" for i in range(len(expected))]
    [spans] = align(words, [tuple(e) for e in expected], job)
    assert [s.text for s in spans] == words
    end = 0
    for span in spans:
        assert end <= span.first <= span.end <= len(job)
        end = span.end
    sounds = [i for i, t in enumerate(job.tolist()) if t not in SILENT]
    owned = [i for s in spans for i in range(s.first, s.end) if int(job[i]) not in SILENT]
    assert owned == sounds  # every sound belongs to exactly one word


def test_the_tiny_models_words_cover_its_characters(tiny_backend: Any) -> None:
    text = "Hello there, 42 friends!"
    [job] = tiny_backend.prepare(text, SynthesisParams(timestamps=True))
    assert [w.text for w in job.words] == text.split()
    letters = tiny_backend.frontend.tokenizer.convert_ids_to_tokens
    spoken = ["".join(t for t in letters(job.token_ids[w.first : w.end].tolist()) if t.isalpha()) for w in job.words]
    assert spoken == ["hello", "there", "fortytwo", "friends"]
    assert tiny_backend.prepare(text, SynthesisParams())[0].words == ()  # only when asked


def test_token_durations_add_up_to_the_audio_alone_or_batched(tiny_backend: Any) -> None:
    params = SynthesisParams(temperature=0.7, seed=3, timestamps=True)
    jobs = tiny_backend.prepare("A short one.", params) + tiny_backend.prepare("And a longer sentence here.", params)
    batched = tiny_backend.synthesize_timed(jobs)
    for job, voiced in zip(jobs, batched, strict=True):
        assert voiced.token_samples is not None
        assert len(voiced.token_samples) == job.length
        assert int(voiced.token_samples.sum()) == len(voiced.audio)
        [alone] = tiny_backend.synthesize_timed([job])
        np.testing.assert_array_equal(alone.token_samples, voiced.token_samples)


@pytest.fixture
async def pipeline(tiny_backend: Any) -> AsyncIterator[SpeechPipeline]:
    """The tiny model behind the production pipeline and a real batcher running timed batches."""
    batcher: MicroBatcher[SynthesisJob, Voiced] = MicroBatcher(
        timed_synthesis(tiny_backend), max_batch_size=8, max_queue_size=64, length_of=lambda job: job.length
    )
    batcher.start().result(timeout=10)
    yield SpeechPipeline(tiny_backend, batcher)
    batcher.stop()


async def test_a_requests_words_are_timed_across_its_sentences(tiny_backend: Any, pipeline: SpeechPipeline) -> None:
    text = "One two three. Four five six seven."
    params = SynthesisParams(temperature=0.0, seed=1, timestamps=True)
    whole, plain = await asyncio.gather(
        pipeline.synthesize(text, params, "en"), pipeline.synthesize(text, SynthesisParams(seed=1), "en")
    )
    streamed = [done.value async for done in await pipeline.open_stream(text, params, "en")]
    assert plain.words == ()
    assert [w.word for w in whole.words] == text.split()
    rate = tiny_backend.info.sample_rate_hz
    first_len = len(whole.chunks[0]) / rate
    starts = [w.start_s for w in whole.words]
    assert starts == sorted(starts)
    assert all(w.start_s <= w.end_s <= whole.samples / rate for w in whole.words)
    assert whole.words[3].start_s >= first_len  # "Four" is in the second sentence's audio
    # A stream times each chunk's words from the chunk's start: shifted by the chunks before, they agree.
    words = [(w, first_len if i else 0.0) for i, chunk in enumerate(streamed) for w in chunk.words]
    assert [w.word for w, _ in words] == text.split()
    assert [w.start_s + shift for w, shift in words] == pytest.approx(starts, abs=0.002)


async def test_an_ssml_break_moves_the_words_after_it(pipeline: SpeechPipeline) -> None:
    from inference.text.ssml import parse_ssml

    params = SynthesisParams(temperature=0.0, seed=1, timestamps=True)
    plain = await pipeline.synthesize("Hello there. Good morning.", params, "en")
    paused = await pipeline.synthesize(
        parse_ssml('<speak>Hello there. <break time="700ms"/>Good morning.</speak>'), params, "en"
    )
    assert [w.word for w in paused.words] == ["Hello", "there.", "Good", "morning."]
    shift = [round(b.start_s - a.start_s, 3) for a, b in zip(plain.words, paused.words, strict=True)]
    assert shift[:2] == [0.0, 0.0]
    assert shift[2:] == pytest.approx([0.7, 0.7], abs=0.002)  # the words after the break come 0.7 s later
