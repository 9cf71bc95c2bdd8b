"""RunPod queue mode in process: the worker's handler on the tiny real model and the real batcher."""

from __future__ import annotations

import asyncio
import base64
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from service import runpod_worker
from service.engine import bring_up
from service.runpod_worker import concurrency, make_handler
from service.settings import Settings
from service.state import Phase, ServiceState

TEXT = "The first sentence is here. A second one follows it. And a third closes."


@pytest.fixture
async def chorus(tiny_backend: Any) -> AsyncIterator[ServiceState]:
    state = ServiceState(settings=Settings(max_text_chars=300))
    await bring_up(state, tiny_backend)
    assert state.phase is Phase.READY
    try:
        yield state
    finally:
        assert state.batcher is not None
        state.batcher.stop(drain=True, timeout_s=10)


async def run_job(chorus: ServiceState, job_input: object) -> list[dict[str, Any]]:
    return [item async for item in make_handler(chorus)({"id": "t", "input": job_input})]


def frames(wav_bytes: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        return wav.getnframes(), wav.getframerate()


async def test_a_job_returns_base64_audio_with_its_facts(chorus: ServiceState) -> None:
    items = await run_job(chorus, {"text": TEXT, "seed": 11})
    assert len(items) == 1
    item = items[0]
    assert set(item) == {"audio", "format", "sample_rate", "duration_s", "seed", "batch_size"}
    count, rate = frames(base64.b64decode(item["audio"]))
    assert item["format"] == "wav"
    assert rate == item["sample_rate"] == 16000
    assert item["seed"] == 11
    assert abs(count / rate - item["duration_s"]) < 0.001
    # The same request through the pipeline the HTTP routes use gives the same length.
    again = await run_job(chorus, {"text": TEXT, "seed": 11})
    assert again[0]["audio"] == item["audio"]


async def test_a_job_may_be_ssml(chorus: ServiceState) -> None:
    plain = (await run_job(chorus, {"text": "Hi there.", "seed": 2}))[0]
    ssml = (await run_job(chorus, {"text": '<speak>Hi there.<break time="1s"/></speak>', "seed": 2}))[0]
    assert ssml["duration_s"] == pytest.approx(plain["duration_s"] + 1.0, abs=1e-3)
    assert "ssml_ignored" not in ssml
    assert "unsaid_characters" not in plain


async def test_job_outputs_name_what_was_not_said_as_the_http_headers_do(chorus: ServiceState) -> None:
    text = "<speak><emphasis>Hi</emphasis> there 中.</speak>"
    whole = (await run_job(chorus, {"text": text}))[0]
    assert (whole["ssml_ignored"], whole["unsaid_characters"]) == (["emphasis"], "中")
    done = (await run_job(chorus, {"text": text, "stream": True}))[-1]
    assert done["done"] is True
    assert (done["ssml_ignored"], done["unsaid_characters"]) == (["emphasis"], "中")


async def test_a_streamed_job_yields_small_chunks_then_a_summary(
    chorus: ServiceState, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = (await run_job(chorus, {"text": TEXT, "seed": 5, "response_format": "pcm"}))[0]
    monkeypatch.setattr(runpod_worker, "CHUNK_BYTES", 1000)
    items = await run_job(chorus, {"text": TEXT, "seed": 5, "response_format": "pcm", "stream": True})
    *chunks, done = items
    assert done["done"] is True
    assert done["chunks"] == len(chunks) > 3  # split below the chunk size, not just one per sentence
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    pieces = [base64.b64decode(c["audio"]) for c in chunks]
    assert all(0 < len(p) <= 1000 for p in pieces)
    streamed = np.frombuffer(b"".join(pieces), dtype="<i2").astype(np.int32)
    reference = np.frombuffer(base64.b64decode(whole["audio"]), dtype="<i2").astype(np.int32)
    assert len(streamed) == len(reference)
    assert int(np.abs(streamed - reference).max()) <= 33  # the same bound as streamed vs whole over HTTP
    assert done["duration_s"] == whole["duration_s"]
    assert done["seed"] == 5


async def test_concurrent_jobs_share_batches(chorus: ServiceState) -> None:
    results = await asyncio.gather(*(run_job(chorus, {"text": f"Job number {i} is here."}) for i in range(8)))
    assert all(len(items) == 1 and "audio" in items[0] for items in results)
    assert max(items[0]["batch_size"] for items in results) > 1


async def test_jobs_the_platform_handed_over_wait_for_room_instead_of_failing(tiny_backend: Any) -> None:
    # In queue mode RunPod's own queue holds the backlog: a job it gave this worker must never be failed
    # for a full local queue (or a wait bound), or the platform's client loses it. A queue of 2 jobs and
    # 6 jobs of 3 sentences each at once would refuse most of them over HTTP.
    state = ServiceState(settings=Settings(max_queue=2, max_batch_size=1, max_queue_wait_s=0.001))
    await bring_up(state, tiny_backend)
    try:
        plain = [run_job(state, {"text": f"{TEXT} Job {i}."}) for i in range(3)]
        streamed = [run_job(state, {"text": f"{TEXT} Stream {i}.", "stream": True}) for i in range(3)]
        results = await asyncio.gather(*plain, *streamed)
    finally:
        assert state.batcher is not None
        state.batcher.stop(drain=True, timeout_s=10)
    assert not [item for items in results for item in items if "error" in item]
    assert all("audio" in items[0] for items in results[:3])
    assert all(items[-1].get("done") is True for items in results[3:])


async def test_waiting_for_room_ends_at_the_request_timeout() -> None:
    from inference.errors import QueueFullError
    from service.runpod_worker import when_admitted

    tries = []

    async def refused() -> None:
        tries.append(1)
        raise QueueFullError(9, retry_after_s=0.05)

    with pytest.raises(QueueFullError):
        await when_admitted(refused, timeout_s=0.3)
    assert 2 <= len(tries) <= 7  # retried after each Retry-After, then given up (as the job's error)


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        (None, 'the job needs an "input" object'),
        ("Hello", 'the job needs an "input" object'),
        ({}, "missing required field `text`"),
        ({"text": "Hi", "speed": 9}, "input.speed"),
        ({"text": "   "}, "text is empty"),
        ({"text": "x" * 301}, "the limit is 300"),
        ({"text": "Hi", "response_format": "ogg"}, "response_format 'ogg' is not supported"),
        ({"text": "Hi", "language": "fr"}, "language 'fr' is not served"),
        ({"text": "Hi", "voice": "nobody"}, "nobody"),
        ({"text": "***"}, "nothing to say once its Markdown is read"),
        ({"text": "Hi", "text_format": "html"}, "input.text_format"),
        ({"text": "<speak>Hi"}, "the SSML is not well-formed"),
    ],
)
async def test_bad_input_is_one_error_naming_the_problem(chorus: ServiceState, job_input: object, message: str) -> None:
    items = await run_job(chorus, job_input)
    assert len(items) == 1
    assert set(items[0]) == {"error"}
    assert message in items[0]["error"]
    # ... and the worker carries on.
    assert "audio" in (await run_job(chorus, {"text": "Still here."}))[0]


async def test_a_worker_that_is_not_ready_refuses_jobs() -> None:
    state = ServiceState(settings=Settings())
    items = await run_job(state, {"text": "Hello"})
    assert items == [{"error": "the worker is not ready (loading)"}]


def test_the_concurrency_modifier_fills_batches_within_the_queue() -> None:
    assert concurrency(Settings())(1) == 32
    assert concurrency(Settings(max_batch_size=4, max_queue=6))(1) == 6
    assert concurrency(Settings.from_env({"CHORUS_RUNPOD_CONCURRENCY": "3"}))(10) == 3
