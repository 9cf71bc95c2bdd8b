"""CHORUS_MODEL_PROCESS: the model in a child process, fed whole batches by this one's batcher."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import ModelSpec
from inference.backends.base import SynthesisJob, SynthesisParams
from inference.backends.remote import Channel, ModelProcess, ModelProcessError, ModelServer
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


# ---------------------------------------------------------------- one model process shared by workers


@pytest.fixture(scope="module")
def shared(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelServer, str]]:
    address = str(tmp_path_factory.mktemp("models") / "model-0")
    server = ModelServer.start(ModelSpec(model=str(tiny_vits_dir), device="cpu"), address, (64, 64))
    yield server, address
    server.stop()


def _connect(tiny_vits_dir: Path, address: str) -> ModelProcess:
    return ModelProcess.connect(ModelSpec(model=str(tiny_vits_dir), device="cpu"), address)


def test_workers_share_one_model_process_whose_waiting_batches_merge(
    shared: tuple[ModelServer, str], tiny_vits_dir: Path, tiny_backend: Any
) -> None:
    server, address = shared
    workers = [_connect(tiny_vits_dir, address) for _ in range(3)]
    assert all(worker.pid is None and worker.alive for worker in workers)  # none started a process of its own
    assert workers[0].info.name == tiny_backend.info.name
    long_text = " ".join(["a long sentence keeps the model process busy for a while"] * 6)
    busy = [job for i in range(24) for job in workers[0].prepare(long_text, SynthesisParams(seed=i))]
    texts = {1: ["hello there", "short"], 2: ["a third worker's sentence"]}
    answers: dict[int, list[Any]] = {}

    def send(index: int) -> None:
        jobs = [job for i, t in enumerate(texts[index]) for job in workers[index].prepare(t, SynthesisParams(seed=i))]
        answers[index] = workers[index].synthesize_timed(jobs)

    # While worker 0's big batch runs, workers 1 and 2 send theirs: both wait, then run as one forward pass.
    first = threading.Thread(target=workers[0].synthesize_timed, args=(busy,))
    first.start()
    time.sleep(0.2)
    others = [threading.Thread(target=send, args=(index,)) for index in (1, 2)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(timeout=60)
    assert workers[0].last_rows == len(busy)
    assert workers[1].last_rows == workers[2].last_rows == 3  # 2 + 1 rows, merged
    for index, sent in texts.items():
        alone = tiny_backend.synthesize_timed(
            [job for i, t in enumerate(sent) for job in tiny_backend.prepare(t, SynthesisParams(seed=i))]
        )
        assert len(answers[index]) == len(sent)
        for a, b in zip(answers[index], alone, strict=True):  # each worker gets its own rows back, in order
            np.testing.assert_allclose(a.audio, b.audio, atol=1e-5)
    for worker in workers:
        worker.close()
    assert server.process.is_alive()  # a worker letting go does not stop the shared process


def test_a_failing_batch_merged_with_others_fails_alone(shared: tuple[ModelServer, str], tiny_vits_dir: Path) -> None:
    _, address = shared
    workers = [_connect(tiny_vits_dir, address) for _ in range(3)]
    long_text = " ".join(["a long sentence keeps the model process busy for a while"] * 6)
    busy = [job for i in range(24) for job in workers[0].prepare(long_text, SynthesisParams(seed=i))]
    bad = [SynthesisJob(token_ids=np.array([10_000, 3], dtype=np.int64))]  # past the embedding table
    good = workers[2].prepare("still fine", SynthesisParams(seed=3))
    outcome: dict[str, Any] = {}

    def run(name: str, worker: ModelProcess, jobs: list[SynthesisJob]) -> None:
        try:
            outcome[name] = worker.synthesize(jobs)
        except Exception as exc:
            outcome[name] = exc

    first = threading.Thread(target=run, args=("busy", workers[0], busy))
    first.start()
    time.sleep(0.2)
    others = [
        threading.Thread(target=run, args=("bad", workers[1], bad)),
        threading.Thread(target=run, args=("good", workers[2], good)),
    ]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(timeout=60)
    assert isinstance(outcome["bad"], IndexError)
    assert len(outcome["good"]) == 1
    assert len(outcome["good"][0]) > 0
    assert workers[1].alive
    assert workers[2].alive
    for worker in workers:
        worker.close()


def test_a_shared_model_that_cannot_load_tells_every_worker_why(tmp_path: Path, tiny_vits_dir: Path) -> None:
    from inference.errors import ModelLoadError

    address = str(tmp_path / "model-0")
    server = ModelServer.start(ModelSpec(model=str(tmp_path / "missing"), device="cpu"), address, (4, 4))
    try:
        for _ in range(2):
            channel = _client(address)
            with pytest.raises(ModelLoadError, match="could not load"):
                ModelProcess._handshake(None, None, channel)  # type: ignore[arg-type]
            channel.close()
    finally:
        server.stop()
    assert not server.process.is_alive()


def _client(address: str) -> Channel:
    from multiprocessing.connection import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            return Channel.adopt(Client(address))
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_workers_see_a_dead_shared_model_process(tiny_vits_dir: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "model-0")
    server = ModelServer.start(ModelSpec(model=str(tiny_vits_dir), device="cpu"), address, (4, 4))
    try:
        workers = [_connect(tiny_vits_dir, address) for _ in range(2)]
        jobs = workers[0].prepare("hello", SynthesisParams(seed=1))
        assert len(workers[0].synthesize(jobs)[0]) > 0
        server.process.kill()
        server.process.join(timeout=10)
        for worker in workers:
            with pytest.raises(ModelProcessError, match="stopped"):
                worker.synthesize(jobs)
            assert not worker.alive  # → /ping 503 in every worker
            worker.close()
    finally:
        server.stop()
