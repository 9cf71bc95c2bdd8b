"""CHORUS_MODEL_PROCESS: the model in a child process, fed whole batches by this one's batcher."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import ModelSpec
from inference.backends.base import SynthesisJob, SynthesisParams
from inference.backends.remote import ModelProcess, ModelProcessError
from service.settings import Settings
from service.state import Phase, ServiceState


@pytest.fixture(scope="module")
def remote(tiny_vits_dir: Path) -> Iterator[ModelProcess]:
    backend = ModelProcess.start(ModelSpec(model=str(tiny_vits_dir), device="cpu"))
    yield backend
    backend.close()


def test_batches_run_in_another_process_and_equal_the_in_process_audio(remote: ModelProcess, tiny_backend: Any) -> None:
    assert remote.pid != os.getpid()
    assert remote.info.name == tiny_backend.info.name
    texts = ["hello there", "a longer sentence than the first one", "short"]
    jobs = [job for i, text in enumerate(texts) for job in remote.prepare(text, SynthesisParams(seed=i))]
    here = [job for i, text in enumerate(texts) for job in tiny_backend.prepare(text, SynthesisParams(seed=i))]
    assert [j.token_ids.tolist() for j in jobs] == [j.token_ids.tolist() for j in here]
    there = remote.synthesize_timed(jobs)
    alone = tiny_backend.synthesize_timed(here)
    assert len(there) == len(texts)
    for a, b in zip(there, alone, strict=True):
        # The same code on the same CPU; oneDNN's choices can differ with the threads each process has.
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-5)
        assert a.token_samples is not None
        assert b.token_samples is not None
        np.testing.assert_array_equal(a.token_samples, b.token_samples)


def test_an_error_in_the_child_is_raised_here_and_the_child_goes_on(remote: ModelProcess) -> None:
    bad = SynthesisJob(token_ids=np.array([10_000, 3], dtype=np.int64))  # past the embedding table
    with pytest.raises(IndexError):
        remote.synthesize([bad])
    assert remote.alive
    good = remote.prepare("still here", SynthesisParams(seed=1))
    assert len(remote.synthesize(good)[0]) > 0


def test_a_dead_model_process_fails_batches_at_once_and_turns_ping_to_503(tiny_vits_dir: Path) -> None:
    backend = ModelProcess.start(ModelSpec(model=str(tiny_vits_dir), device="cpu"))
    pipeline: Any = type("Pipeline", (), {"backend": backend})()
    batcher: Any = type("Batcher", (), {"alive": True, "busy_for_s": 0.0})()
    chorus = ServiceState(settings=Settings(), phase=Phase.READY, batcher=batcher, pipelines={"m": pipeline})
    assert chorus.health()[0] == 200
    jobs = backend.prepare("hello", SynthesisParams())
    backend._process.kill()
    backend._process.join(timeout=10)
    with pytest.raises(ModelProcessError, match="stopped"):
        backend.synthesize(jobs)
    with pytest.raises(ModelProcessError):
        backend.synthesize(jobs)  # at once, without touching the pipe again
    assert not backend.alive
    status, body = chorus.health()
    assert status == 503
    assert body is not None
    assert "model process" in body["detail"]
    backend.close()


def test_a_model_that_cannot_load_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    from inference.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"config\.json"):
        ModelProcess.start(ModelSpec(model=str(tmp_path), device="cpu"))
