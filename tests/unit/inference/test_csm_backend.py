"""CSM on a tiny random checkpoint loaded through ``load_backend`` (the production path)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from inference.backends import ModelSpec, load_backend
from inference.backends.base import SynthesisParams
from inference.errors import InvalidTextError, UnknownVoiceError, UnsupportedParameterError
from tests.tiny_model import write_tiny_csm

TEXTS = ["hello world.", "a longer sentence is said here.", "hi.", "yes indeed, 42 of them."]
FRAME = 1920  # Mimi: 12.5 frames a second at 24 kHz


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_backend(ModelSpec(model=str(write_tiny_csm(tmp_path_factory.mktemp("csm"))), device="cpu"))


def speak(backend: Any, text: str, **params: Any) -> np.ndarray:
    return backend.synthesize(backend.prepare(text, SynthesisParams(**params)))[0]  # type: ignore[no-any-return]


def test_the_family_and_speakers_come_from_the_checkpoint(backend: Any) -> None:
    assert backend.info.family == "csm"
    assert backend.info.voices == ("0", "1")
    assert backend.info.sample_rate_hz == 24000
    job = backend.prepare("hi.", SynthesisParams(voice="1"))[0]
    text = backend.tokenizer.decode(job.token_ids)
    assert text == "<|begin_of_text|>[1]hi.<|end_of_text|>"  # the prompt sesame/csm-1b documents


def test_a_batch_trims_every_row_to_its_own_length(backend: Any) -> None:
    jobs = [backend.prepare(text, SynthesisParams(seed=i, voice=str(i % 2)))[0] for i, text in enumerate(TEXTS)]
    waves = backend.synthesize(jobs)
    assert len(waves) == len(TEXTS)
    assert all(len(w) > 0 and len(w) % FRAME == 0 and np.isfinite(w).all() for w in waves)
    assert all(len(w) // FRAME <= backend.max_frames(job) for w, job in zip(waves, jobs, strict=True))
    assert len({len(w) for w in waves}) > 1  # rows end at their own end-of-audio frame


def test_greedy_rows_batched_equal_the_same_rows_alone(backend: Any) -> None:
    params = [SynthesisParams(seed=i, temperature=0.0, voice=str(i % 2)) for i in range(len(TEXTS))]
    jobs = [backend.prepare(text, p)[0] for text, p in zip(TEXTS, params, strict=True)]
    assert len({backend.batch_key(job) for job in jobs}) == 1  # speakers share a batch
    together = backend.synthesize(jobs)
    for job, row in zip(jobs, together, strict=True):
        alone = backend.synthesize([job])[0]
        assert len(alone) == len(row)
        assert float(np.abs(alone - row).max()) < 1e-4


def test_seeded_requests_repeat_and_run_alone(backend: Any) -> None:
    first = speak(backend, "hello world.", seed=5, seeded=True)
    assert np.array_equal(first, speak(backend, "hello world.", seed=5, seeded=True))
    other = speak(backend, "hello world.", seed=6, seeded=True)
    assert len(other) != len(first) or not np.array_equal(first, other)
    seeded = backend.prepare("hi.", SynthesisParams(seed=1, seeded=True))[0]
    free = [backend.prepare("hi.", SynthesisParams(seed=s, voice=v))[0] for s, v in ((3, "0"), (4, "1"))]
    assert backend.batch_key(seeded) != backend.batch_key(free[0])
    assert backend.batch_key(free[0]) == backend.batch_key(free[1])


def test_a_temperature_does_not_leak_into_the_next_batch(backend: Any) -> None:
    before = speak(backend, "hello world.", seed=3, seeded=True)
    speak(backend, "hello world.", seed=3, seeded=True, temperature=0.05)
    assert np.array_equal(before, speak(backend, "hello world.", seed=3, seeded=True))


def test_rows_end_at_the_end_code_an_undecodable_code_or_their_cap(backend: Any) -> None:
    frames = torch.tensor(
        [
            [[3, 1], [0, 5], [2, 2]],  # end-of-audio (codebook 0 is 0) at frame 1
            [[3, 1], [4, 9], [2, 2]],  # code 9 is past Mimi's 8 codes: ends at frame 1
            [[3, 1], [4, 4], [2, 2]],  # no end: the cap decides
        ]
    )
    assert backend._lengths(frames, [10, 10, 2]) == [1, 1, 2]
    short, long = (backend.prepare(t, SynthesisParams())[0] for t in ("hi.", "a far longer sentence to say."))
    assert backend.max_frames(short) < backend.max_frames(long)


def test_bad_requests_are_refused_by_name(backend: Any) -> None:
    with pytest.raises(UnsupportedParameterError, match="speed"):
        backend.prepare("hi.", SynthesisParams(speed=1.5))
    with pytest.raises(UnknownVoiceError, match="'7'"):
        backend.prepare("hi.", SynthesisParams(voice="7"))
    with pytest.raises(InvalidTextError):
        backend.prepare("...", SynthesisParams())
    with pytest.raises(InvalidTextError, match="at most"):
        backend.prepare("word " * 200, SynthesisParams())
