"""Batcher behaviour with a scripted runner (a fake is fine here: these tests are about batching)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from inference import BatcherStoppedError, MicroBatcher, QueueFullError, SynthesisError


@dataclass(frozen=True)
class Item:
    text: str
    key: str = "a"


class ScriptedRunner:
    """Records every batch; ``gate`` lets a test hold the worker inside a batch."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: Sequence[Item]) -> list[str]:
        self.batches.append([item.text for item in items])
        self.entered.set()
        self.gate.wait(10)
        if self.fail_on is not None and any(item.text == self.fail_on for item in items):
            raise RuntimeError("boom")
        return [item.text.upper() for item in items]


def make(runner: ScriptedRunner, **kwargs: object) -> MicroBatcher[Item, str]:
    options: dict[str, object] = {"max_batch_size": 4, "max_queue_size": 16}
    options.update(kwargs)
    batcher: MicroBatcher[Item, str] = MicroBatcher(
        runner,
        length_of=lambda item: len(item.text),
        key_of=lambda item: item.key,
        **options,  # type: ignore[arg-type]
    )
    batcher.start().result(timeout=10)
    return batcher


@pytest.fixture
def runner() -> Iterator[ScriptedRunner]:
    scripted = ScriptedRunner()
    yield scripted
    scripted.gate.set()


async def _wait_for(event: threading.Event) -> None:
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never started a batch")


async def test_each_caller_gets_its_own_result(runner: ScriptedRunner) -> None:
    batcher = make(runner)
    texts = [f"text-{i}" for i in range(12)]
    results = await asyncio.gather(*(batcher.submit(Item(t)) for t in texts))
    assert [r.value for r in results] == [t.upper() for t in texts]
    batcher.stop()


async def test_jobs_gather_while_a_batch_runs_and_are_sorted_by_length(runner: ScriptedRunner) -> None:
    batcher = make(runner)
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(Item("first")))
    await _wait_for(runner.entered)  # the worker is busy with a batch of one
    waiting = [asyncio.ensure_future(batcher.submit(Item(t))) for t in ("ccc", "a", "bb")]
    await asyncio.sleep(0.05)
    assert batcher.queue_depth == 3
    runner.gate.set()
    done = await asyncio.gather(first, *waiting)
    assert runner.batches == [["first"], ["a", "bb", "ccc"]]
    assert [d.batch_size for d in done] == [1, 3, 3, 3]
    assert [d.value for d in done] == ["FIRST", "CCC", "A", "BB"]
    batcher.stop()


async def test_a_batchs_results_reach_the_loop_in_one_hand_off(
    runner: ScriptedRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    hand_offs: list[object] = []
    original = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            hand_offs.append(callback)
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    batcher = make(runner)
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(Item("first")))
    await _wait_for(runner.entered)
    waiting = [asyncio.ensure_future(batcher.submit(Item(t))) for t in ("a", "b", "c", "d")]
    await asyncio.sleep(0.05)
    hand_offs.clear()
    runner.gate.set()
    done = await asyncio.gather(first, *waiting)
    assert [d.value for d in done] == ["FIRST", "A", "B", "C", "D"]
    assert runner.batches[1] == ["a", "b", "c", "d"]
    assert len(hand_offs) == 2  # the batch of one, then the batch of four: one wake-up of the loop each
    batcher.stop()


async def test_an_idle_worker_starts_at_once_without_waiting_for_a_full_batch(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_wait_s=0.0)
    done = await batcher.submit(Item("alone"))
    assert done.batch_size == 1
    batcher.stop()


async def test_batch_wait_fills_batches(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_wait_s=0.5)
    done = await asyncio.gather(*(batcher.submit(Item(str(i))) for i in range(4)))
    assert {d.batch_size for d in done} == {4}
    batcher.stop()


async def test_batches_never_exceed_the_maximum(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_size=3)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    rest = [asyncio.ensure_future(batcher.submit(Item(str(i)))) for i in range(7)]
    await asyncio.sleep(0.05)
    runner.gate.set()
    await asyncio.gather(blocker, *rest)
    assert [len(b) for b in runner.batches] == [1, 3, 3, 1]
    batcher.stop()


async def test_a_full_queue_refuses_at_once_with_a_retry_hint(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_queue_size=2)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    queued = [asyncio.ensure_future(batcher.submit(Item(str(i)))) for i in range(2)]
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 2
    with pytest.raises(QueueFullError) as refused:
        await batcher.submit(Item("one too many"))
    assert refused.value.retry_after_s >= 1
    runner.gate.set()
    await asyncio.gather(blocker, *queued)
    batcher.stop()


async def test_a_wait_bound_refuses_a_queue_that_is_slow_not_only_one_that_is_full(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_size=1, max_queue_size=100, max_queue_wait_s=1.0)
    assert batcher.expected_wait_s() == 0.0  # nothing timed yet: no estimate, nothing refused for it
    # Time one batch: it is held at least 0.2 s, so the recent batch time is at least that.
    runner.gate.clear()
    timed = asyncio.ensure_future(batcher.submit(Item("timed")))
    await _wait_for(runner.entered)
    await asyncio.sleep(0.2)
    runner.gate.set()
    await timed
    # Hold the worker in a batch; one request of 10 jobs goes in whole (nothing waited before it); the next
    # would wait >= 10 x 0.2 s for its batch, over the 1 s bound.
    runner.entered.clear()
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    queued = [asyncio.ensure_future(batcher.run([Item(str(i)) for i in range(10)]))]
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 10  # far below max_queue_size: the job count alone would admit
    assert batcher.expected_wait_s() >= 10 * 0.2
    with pytest.raises(QueueFullError) as refused:
        await batcher.submit(Item("too late"))
    assert "wait ~" in str(refused.value)
    assert "over the 1 s bound" in str(refused.value)
    assert refused.value.retry_after_s >= 1
    assert batcher.queue_depth == 10  # nothing of the refused request went in
    runner.gate.set()
    await asyncio.gather(blocker, *queued)
    # An empty queue admits whatever the estimate: the worker is free, or about to be.
    assert (await batcher.submit(Item("after"))).value == "AFTER"
    batcher.stop()


async def test_without_a_wait_bound_only_the_job_count_refuses(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_size=1, max_queue_size=100)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    await asyncio.sleep(0.2)
    queued = [asyncio.ensure_future(batcher.submit(Item(str(i)))) for i in range(30)]
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 30
    runner.gate.set()
    assert len(await asyncio.gather(blocker, *queued)) == 31
    batcher.stop()


def test_a_wait_bound_must_be_positive(runner: ScriptedRunner) -> None:
    with pytest.raises(ValueError, match="max_queue_wait_s"):
        MicroBatcher(runner, max_batch_size=1, max_queue_size=1, max_queue_wait_s=0.0)


async def test_a_multi_job_request_is_admitted_whole_or_not_at_all(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_queue_size=3)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    # Room in the queue: a request larger than the bound still goes in whole (else it never could).
    big = asyncio.ensure_future(batcher.run([Item(f"big-{i}") for i in range(4)]))
    await asyncio.sleep(0.02)
    assert batcher.queue_depth == 4
    with pytest.raises(QueueFullError):
        await batcher.run([Item("x"), Item("y")])
    assert batcher.queue_depth == 4  # nothing of the refused request went in
    runner.gate.set()
    await asyncio.gather(blocker, big)
    batcher.stop()


async def test_different_keys_never_share_a_batch_and_the_oldest_goes_first(runner: ScriptedRunner) -> None:
    batcher = make(runner)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block", key="x")))
    await _wait_for(runner.entered)
    jobs = [Item("a1", "a"), Item("b1", "b"), Item("a2", "a"), Item("b2", "b")]
    futures = [asyncio.ensure_future(batcher.submit(job)) for job in jobs]
    await asyncio.sleep(0.05)
    runner.gate.set()
    done = await asyncio.gather(blocker, *futures)
    assert runner.batches[1:] == [["a1", "a2"], ["b1", "b2"]]
    assert [d.value for d in done[1:]] == ["A1", "B1", "A2", "B2"]
    batcher.stop()


async def _four_needs(batcher: MicroBatcher[Item, str], runner: ScriptedRunner) -> list[list[str]]:
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    now = time.monotonic()
    futures = [
        asyncio.ensure_future(batcher.run([Item("in-hand")], needed_by=now + 60)),  # a minute of audio in hand
        asyncio.ensure_future(batcher.run([Item("request")])),  # needed when it arrives
        asyncio.ensure_future(batcher.run([Item("overdue")], needed_by=now - 1)),
        asyncio.ensure_future(batcher.run([Item("soon")], needed_by=now + 30)),
    ]
    await asyncio.sleep(0.05)
    runner.gate.set()
    await asyncio.gather(blocker, *futures)
    assert [f.result()[0].value for f in futures] == ["IN-HAND", "REQUEST", "OVERDUE", "SOON"]
    batcher.stop()
    return runner.batches[1:]


async def test_a_job_not_needed_yet_waits_behind_the_jobs_needed_now(runner: ScriptedRunner) -> None:
    """A live listener with audio in hand yields to jobs needed now (kept in arrival order)."""
    batches = await _four_needs(make(runner, max_batch_size=1), runner)
    assert batches == [["request"], ["overdue"], ["soon"], ["in-hand"]]


async def test_behind_a_backlog_every_job_keeps_its_arrival_order(runner: ScriptedRunner) -> None:
    """When the queue could not serve even a job needed a minute from now before then, deferring it would
    only make it late: arrival order."""
    batcher = make(runner, max_batch_size=1)
    batcher._batch_s_ewma = 100.0  # batches have lately taken 100 s each
    assert await _four_needs(batcher, runner) == [["in-hand"], ["request"], ["overdue"], ["soon"]]


async def test_a_flood_of_one_key_cannot_starve_another(runner: ScriptedRunner) -> None:
    """Several models share one batcher: the oldest job picks the key, so ``b1`` waits only for the jobs
    older than it (younger ``a`` jobs may fill a batch's spare room, never overtake it for good)."""
    batcher = make(runner)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block", key="x")))
    await _wait_for(runner.entered)
    order = [*(Item(f"a{i}", "a") for i in range(1, 7)), Item("b1", "b"), *(Item(f"a{i}", "a") for i in range(7, 11))]
    futures = [asyncio.ensure_future(batcher.submit(job)) for job in order]
    await asyncio.sleep(0.05)
    runner.gate.set()
    await asyncio.gather(blocker, *futures)
    assert runner.batches[1:] == [["a1", "a2", "a3", "a4"], ["a5", "a6", "a7", "a8"], ["b1"], ["a9", "a10"]]
    batcher.stop()


async def test_cancelled_callers_are_dropped_before_their_batch_forms(runner: ScriptedRunner) -> None:
    batcher = make(runner)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    gone = [asyncio.ensure_future(batcher.submit(Item(f"gone-{i}"))) for i in range(3)]
    kept = asyncio.ensure_future(batcher.submit(Item("kept")))
    await asyncio.sleep(0.02)
    for future in gone:
        future.cancel()
    await asyncio.sleep(0.02)
    runner.gate.set()
    await asyncio.gather(blocker, kept)
    assert runner.batches == [["block"], ["kept"]]
    assert batcher.jobs_dropped_abandoned == 3
    batcher.stop()


async def test_a_failing_job_fails_alone(runner: ScriptedRunner) -> None:
    runner.fail_on = "bad"
    batcher = make(runner)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    futures = [asyncio.ensure_future(batcher.submit(Item(t))) for t in ("ok1", "bad", "ok2", "ok3")]
    await asyncio.sleep(0.02)
    runner.gate.set()
    results = await asyncio.gather(blocker, *futures, return_exceptions=True)
    assert [r.value if not isinstance(r, BaseException) else type(r) for r in results] == [
        "BLOCK",
        "OK1",
        SynthesisError,
        "OK2",
        "OK3",
    ]
    assert batcher.alive
    batcher.stop()


async def test_stop_with_drain_finishes_queued_jobs_and_then_refuses(runner: ScriptedRunner) -> None:
    batcher = make(runner)
    runner.gate.clear()
    futures = [asyncio.ensure_future(batcher.submit(Item(str(i)))) for i in range(6)]
    await _wait_for(runner.entered)
    stopper = asyncio.get_running_loop().run_in_executor(None, lambda: batcher.stop(drain=True, timeout_s=10))
    await asyncio.sleep(0.02)
    with pytest.raises(BatcherStoppedError):
        await batcher.submit(Item("late"))
    runner.gate.set()
    await stopper
    done = await asyncio.gather(*futures)
    assert [d.value for d in done] == [str(i) for i in range(6)]


async def test_a_batcher_refuses_before_start() -> None:
    batcher: MicroBatcher[Item, str] = MicroBatcher(ScriptedRunner(), max_batch_size=2, max_queue_size=2)
    with pytest.raises(BatcherStoppedError):
        await batcher.submit(Item("early"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0, "max_queue_size": 1},
        {"max_batch_size": 1, "max_queue_size": 0},
        {"max_batch_size": 1, "max_queue_size": 1, "max_batch_wait_s": -1},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        MicroBatcher(ScriptedRunner(), **kwargs)  # type: ignore[arg-type]


async def test_a_progressive_group_enters_batches_one_two_four_at_a_time(runner: ScriptedRunner) -> None:
    from inference.batcher import BatchGroup

    batcher = make(runner, max_batch_size=16)
    group = BatchGroup(progressive=True)
    items = [Item(f"chunk-{i:02d}") for i in range(10)]
    done = await batcher.run(items, group=group)
    assert [len(b) for b in runner.batches] == [1, 2, 4, 3]
    assert [d.value for d in done] == [i.text.upper() for i in items]
    assert runner.batches[0] == ["chunk-00"]  # the first chunk runs alone: first audio comes fast
    batcher.stop()


async def test_a_plain_request_is_not_held_back(runner: ScriptedRunner) -> None:
    batcher = make(runner, max_batch_size=16)
    await batcher.run([Item(f"chunk-{i}") for i in range(10)])
    assert [len(b) for b in runner.batches] == [10]
    batcher.stop()


async def test_a_job_past_its_deadline_is_dropped_unsynthesized(runner: ScriptedRunner) -> None:
    import time

    from inference import DeadlineExceededError

    batcher = make(runner)
    runner.gate.clear()
    blocker = asyncio.ensure_future(batcher.submit(Item("block")))
    await _wait_for(runner.entered)
    late = asyncio.ensure_future(batcher.run([Item("late")], deadline=time.monotonic() + 0.05))
    on_time = asyncio.ensure_future(batcher.run([Item("on time")], deadline=time.monotonic() + 60))
    await asyncio.sleep(0.2)  # the deadline passes while the worker is busy
    runner.gate.set()
    with pytest.raises(DeadlineExceededError):
        await late
    assert (await on_time)[0].value == "ON TIME"
    await blocker
    assert all("late" not in batch for batch in runner.batches)
    assert batcher.jobs_dropped_deadline == 1
    batcher.stop()


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the batcher recognises by name."""


async def test_out_of_memory_halves_the_batch_for_a_while_and_loses_no_job() -> None:
    seen: list[int] = []

    def run(items: Sequence[Item]) -> list[str]:
        seen.append(len(items))
        if len(items) > 2:
            raise OutOfMemoryError("CUDA out of memory")
        return [item.text.upper() for item in items]

    batcher: MicroBatcher[Item, str] = MicroBatcher(run, max_batch_size=8, max_queue_size=64, oom_cooldown_s=60)
    batcher.start().result(timeout=10)
    done = await batcher.run([Item(str(i)) for i in range(8)])
    assert [d.value for d in done] == [str(i) for i in range(8)]
    assert seen[0] == 8
    assert max(seen[1:]) <= 4
    assert batcher.oom_events >= 1
    assert batcher.current_max_batch_size == 2  # still capped: the cool-down has not passed
    seen.clear()
    await batcher.run([Item(f"later-{i}") for i in range(6)])
    assert max(seen) <= 2
    batcher.stop()


def test_a_start_abandoned_during_setup_ends_the_worker_quietly() -> None:
    """A shutdown while the model loads cancels the start; the worker then finishes its setup and must end
    without an exception in its thread (it used to die on ``InvalidStateError``)."""
    release = threading.Event()
    runner = ScriptedRunner()

    def slow_setup() -> ScriptedRunner:
        assert release.wait(10)
        return runner

    batcher: MicroBatcher[Item, str] = MicroBatcher(max_batch_size=4, max_queue_size=8)
    ready = batcher.start(slow_setup)
    assert ready.cancel()
    release.set()
    thread = batcher._thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert not batcher.accepting
    assert batcher.failure is None


async def test_a_row_whose_caller_left_mid_batch_reads_as_abandoned() -> None:
    """Backends that work row by row (VITS on CPU) skip such rows: a barge-in frees the model sooner."""
    from inference.batcher import row_abandoned

    seen: list[list[bool]] = []
    inside, resume = threading.Event(), threading.Event()

    def run(items: Sequence[Item]) -> list[str]:
        inside.set()
        resume.wait(10)
        seen.append([row_abandoned(row) for row in range(len(items) + 1)])
        return [item.text for item in items]

    batcher: MicroBatcher[Item, str] = MicroBatcher(
        run, max_batch_size=4, max_queue_size=8, max_batch_wait_s=0.05, length_of=lambda item: len(item.text)
    )
    batcher.start().result(timeout=10)
    try:
        kept = batcher.enqueue([Item("a")])  # both queued before the worker can look: one batch
        left = asyncio.ensure_future(batcher.enqueue([Item("bb")]).wait())
        await _wait_for(inside)
        left.cancel()  # the caller goes away while its row is in the running batch
        await asyncio.sleep(0.01)
        resume.set()
        assert [d.value for d in await kept.wait()] == ["a"]
    finally:
        batcher.stop()
    assert seen == [[False, True, False]]  # (rows sorted by length: "a", then "bb"; past the end: False)
    assert not row_abandoned(0)  # outside a batch
