"""The micro-batcher: a bounded queue in front of one worker thread that runs whole batches.

Callers on the event loop ``await batcher.run([...])``; the worker thread takes the oldest waiting job
(jobs that say they are not needed yet wait behind the rest: ``enqueue``'s ``needed_by``), gathers up to
``max_batch_size`` jobs that may share a forward pass with it, sorts them by length and hands them to the
model in one call. Results travel back to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from inference.errors import BatcherStoppedError, DeadlineExceededError, QueueFullError, SynthesisError

__all__ = ["BatchGroup", "Completed", "MicroBatcher", "Pending", "row_abandoned"]

log = logging.getLogger(__name__)

#: The batch running on this thread (the batcher's worker), for ``row_abandoned``.
_running = threading.local()


def row_abandoned(row: int) -> bool:
    """Whether nobody waits any more for row ``row`` of the batch this thread is running (its caller went
    away, or a live session was cleared, after the batch started). A backend that works row by row may
    skip such a row (any result will do: it is discarded). False outside a batch."""
    batch: list[_Job[Any, Any]] | None = getattr(_running, "batch", None)
    return batch is not None and 0 <= row < len(batch) and batch[row].abandoned


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Completed(Generic[R]):
    """A job's result with the facts about the batch that produced it."""

    value: R
    batch_size: int
    queue_s: float
    inference_s: float
    #: Sequence number of the batch, so a caller with several jobs can tell which shared a forward pass.
    batch_id: int = 0


@dataclass(slots=True, eq=False)
class BatchGroup:
    """Jobs that belong together (one request or one stream). A progressive group may put at most
    ``started + 1`` of its jobs into one batch, so its first job runs alone (fast first audio for a
    stream) and later batches take 2, 4, 8 ... of them, in order."""

    progressive: bool = False
    started: int = 0


@dataclass(slots=True, eq=False)
class _Job(Generic[T, R]):
    item: T
    group: BatchGroup
    key: Hashable
    length: int
    future: asyncio.Future[Completed[R]]
    loop: asyncio.AbstractEventLoop
    enqueued_at: float
    deadline: float | None = None
    #: When its audio is needed (``time.monotonic()``): a live listener's runs out then; a request's is
    #: needed when it arrives.
    needed_by: float = 0.0
    # Set from the event loop when the caller goes away; read by the worker without a lock. A stale
    # read only means one wasted row, never a wrong result, so the GIL's atomic bool store is enough.
    abandoned: bool = False
    started_at: float = field(default=0.0)


class Pending(Generic[R]):
    """Admitted jobs; ``wait`` for their results. Cancelling the waiter abandons the jobs not yet run."""

    def __init__(self, jobs: list[_Job[Any, R]]) -> None:
        self._jobs = jobs

    async def wait(self) -> list[Completed[R]]:
        """All results, in order; the first failure is raised."""
        try:
            return list(await asyncio.gather(*(job.future for job in self._jobs)))
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Drop the jobs not yet taken into a batch (their results, if any, are discarded)."""
        for job in self._jobs:
            job.abandoned = True
            if not job.future.done():
                job.future.cancel()
            elif not job.future.cancelled():
                job.future.exception()  # mark retrieved: one failure must not log the others


class MicroBatcher(Generic[T, R]):
    """Bounded admission, one worker thread, batches formed from whatever is waiting.

    ``run_batch`` receives a list of items sorted by ``length_of`` and must return one result per item
    in the same order. Items whose ``key_of`` differ never share a call. It may instead come from the
    ``setup`` callable given to ``start``, which runs on the worker thread itself: loading and warming a
    model on the thread that will run it matters on CPU, where each thread that enters torch gets its
    own OpenMP team and a second team competes with the first for the cores (measured: 40 % slower).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]] | None = None,
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_batch_wait_s: float = 0.0,
        max_queue_wait_s: float | None = None,
        oom_cooldown_s: float = 60.0,
        on_batch: Callable[[int, float], None] | None = None,
        length_of: Callable[[T], int] = lambda _item: 0,
        key_of: Callable[[T], Hashable] = lambda _item: None,
        name: str = "chorus-batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if max_batch_wait_s < 0:
            raise ValueError("max_batch_wait_s must not be negative")
        if max_queue_wait_s is not None and max_queue_wait_s <= 0:
            raise ValueError("max_queue_wait_s must be positive (or None: no bound)")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_batch_wait_s = max_batch_wait_s
        self.max_queue_wait_s = max_queue_wait_s
        self._length_of = length_of
        self._key_of = key_of
        self._name = name
        self._queue: deque[_Job[T, R]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stop = False
        self._drain = True
        self._busy_since: float | None = None
        self._batch_s_ewma: float | None = None
        self._batch_seq = 0
        self._on_batch = on_batch
        # After an out-of-memory error the batch size is halved for a while (see _run_isolated).
        self.oom_cooldown_s = oom_cooldown_s
        self._oom_cap: int | None = None
        self._oom_until = 0.0
        self.oom_events = 0
        self.failure: BaseException | None = None
        self.batches_run = 0
        self.jobs_run = 0
        self.jobs_dropped_abandoned = 0
        self.jobs_dropped_deadline = 0
        self.jobs_refused = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, setup: Callable[[], Callable[[list[T]], Sequence[R]]] | None = None) -> Future[None]:
        """Start the worker thread. ``setup``, if given, runs on it first and returns the batch function.

        The returned future completes when the worker is ready (or fails with ``setup``'s exception);
        ``run`` is admitted only from then on.
        """
        if setup is None and self._run_batch is None:
            raise ValueError("give the batcher a run_batch function or a setup that returns one")
        ready: Future[None] = Future()
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("batcher already started")
            self._thread = threading.Thread(target=self._worker, args=(setup, ready), name=self._name, daemon=True)
            self._thread.start()
        return ready

    def close(self) -> None:
        """Refuse new jobs from now on; queued and running jobs still complete."""
        with self._cond:
            self._accepting = False

    def stop(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop the worker. With ``drain`` every queued job runs first; without it they fail.

        Blocks (up to ``timeout_s``) until the worker has exited: call it from a worker thread, not the
        event loop, when jobs may still be queued.
        """
        with self._cond:
            self._accepting = False
            self._stop = True
            self._drain = drain
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._cond:
            leftovers = list(self._queue)
            self._queue.clear()
        _resolve_all([(job, BatcherStoppedError("the server is shutting down")) for job in leftovers])

    # ------------------------------------------------------------------ state

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not counting the batch being run)."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        """Whether ``run`` admits new jobs."""
        return self._accepting

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running and has not died."""
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    @property
    def current_max_batch_size(self) -> int:
        """The batch size in force: the configured one, or less during an out-of-memory cool-down."""
        if self._oom_cap is not None and time.monotonic() < self._oom_until:
            return min(self.max_batch_size, self._oom_cap)
        return self.max_batch_size

    @property
    def busy_for_s(self) -> float:
        """How long the current batch has been running (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def retry_after_s(self) -> int:
        """A whole-second estimate of when a refused caller could be admitted."""
        per_batch = self._batch_s_ewma or 1.0
        batches_ahead = math.ceil((len(self._queue) + 1) / self.max_batch_size)
        return max(1, math.ceil(per_batch * batches_ahead))

    def expected_wait_s(self) -> float:
        """How long a job queued now would wait for its batch: the batches ahead of it (the jobs waiting,
        at the batch size in force) times the recent batch time, plus what is left of the running batch.
        0 until a batch has been timed."""
        per_batch = self._batch_s_ewma
        if per_batch is None:
            return 0.0
        batches_ahead = math.ceil(len(self._queue) / self.current_max_batch_size)
        running_left = max(0.0, per_batch - self.busy_for_s) if self._busy_since is not None else 0.0
        return running_left + per_batch * batches_ahead

    # ------------------------------------------------------------------ submission

    def enqueue(
        self,
        items: Sequence[T],
        *,
        group: BatchGroup | None = None,
        deadline: float | None = None,
        needed_by: float | None = None,
    ) -> Pending[R]:
        """Queue ``items`` together, all admitted or none, without waiting for them.

        A request is admitted while fewer than ``max_queue_size`` jobs wait, and then whole: a request
        of more sentences than the bound must still be servable, so the queue may overshoot by one
        request's jobs. With ``max_queue_wait_s``, it is also refused while its first job would wait
        longer than that for a batch (``expected_wait_s``), unless nothing waits at all. Raises
        ``QueueFullError`` at once when refused, ``BatcherStoppedError`` when the batcher is not accepting.
        A job still waiting at its ``deadline`` (``time.monotonic()`` seconds), or that could not finish by
        then, is dropped and fails with ``DeadlineExceededError``.
        Jobs of a progressive ``group`` enter batches 1, 2, 4, ... at a time, in order (``BatchGroup``).
        ``needed_by`` (``time.monotonic()`` seconds; default now) is when the caller needs the audio: a job
        not needed yet (a live listener with audio in hand) waits behind every job needed now, which go in
        arrival order.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        group = group or BatchGroup()
        jobs = [
            _Job[T, R](
                item=item,
                group=group,
                key=self._key_of(item),
                length=self._length_of(item),
                future=loop.create_future(),
                loop=loop,
                enqueued_at=now,
                deadline=deadline,
                needed_by=now if needed_by is None else needed_by,
            )
            for item in items
        ]
        with self._cond:
            self._admit_or_raise(len(jobs))
            self._queue.extend(jobs)
            self._cond.notify()
        return Pending(jobs)

    def check_admission(self) -> None:
        """Raise now what ``enqueue`` would raise for a request arriving now (``BatcherStoppedError``,
        ``QueueFullError``), so that a caller can refuse before preparing its text: under overload a
        refusal then costs no phonemization. ``enqueue`` checks again; this one counts one refused job."""
        with self._cond:
            self._admit_or_raise(1)

    def _admit_or_raise(self, count: int) -> None:
        """Admission of ``count`` jobs arriving now; the caller holds ``_cond``."""
        if not self._accepting:
            raise BatcherStoppedError("the batcher is not accepting jobs")
        if len(self._queue) >= self.max_queue_size:
            self.jobs_refused += count
            raise QueueFullError(len(self._queue), self.retry_after_s())
        if self.max_queue_wait_s is not None and self._queue:  # an empty queue always admits
            wait_s = self.expected_wait_s()
            if wait_s > self.max_queue_wait_s:
                self.jobs_refused += count
                raise QueueFullError(
                    len(self._queue),
                    self.retry_after_s(),
                    detail=f"the synthesis queue is too long: a request now would wait ~{wait_s:.1f} s for its "
                    f"first batch, over the {self.max_queue_wait_s:g} s bound ({len(self._queue)} jobs waiting)",
                )

    async def run(
        self,
        items: Sequence[T],
        *,
        group: BatchGroup | None = None,
        deadline: float | None = None,
        needed_by: float | None = None,
    ) -> list[Completed[R]]:
        """Queue ``items`` together (all admitted or none) and wait for all their results, in order.

        If the caller is cancelled, its jobs still waiting are dropped before any batch takes them.
        """
        if not items:
            return []
        return await self.enqueue(items, group=group, deadline=deadline, needed_by=needed_by).wait()

    async def submit(self, item: T) -> Completed[R]:
        """Queue one item and wait for its result."""
        (done,) = await self.run([item])
        return done

    # ------------------------------------------------------------------ worker

    def _worker(self, setup: Callable[[], Callable[[list[T]], Sequence[R]]] | None, ready: Future[None]) -> None:
        if setup is not None:
            try:
                self._run_batch = setup()
            except BaseException as exc:
                self.failure = exc
                with contextlib.suppress(InvalidStateError):  # (nobody waits any more: see below)
                    ready.set_exception(exc)
                return
        with self._cond:
            self._accepting = not self._stop
        try:
            ready.set_result(None)
        except InvalidStateError:
            # Whoever started it stopped waiting (a shutdown during the load cancelled the future): nothing
            # will use this worker, which ends here instead of dying on the exception in its thread.
            with self._cond:
                self._accepting = False
            return
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._execute(batch)
        except BaseException as exc:  # the worker must never vanish silently: health checks read this
            log.exception("batcher worker died")
            self.failure = exc
            with self._cond:
                self._accepting = False
                leftovers = list(self._queue)
                self._queue.clear()
            _resolve_all([(job, BatcherStoppedError("the inference worker stopped")) for job in leftovers])

    def _next_batch(self) -> list[_Job[T, R]] | None:
        with self._cond:
            while True:
                self._drop_abandoned()
                if self._queue and not (self._stop and not self._drain):
                    break
                if self._stop:
                    return None
                self._cond.wait()
            if self.max_batch_wait_s > 0 and len(self._queue) < self.max_batch_size and not self._stop:
                # Trade a little latency for fuller batches, but only as long as the operator allows.
                deadline = time.monotonic() + self.max_batch_wait_s
                while len(self._queue) < self.max_batch_size and not self._stop:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._drop_abandoned()
                if not self._queue:
                    return []
            # Jobs not needed before the queue could serve them (now, plus its expected wait and a batch) go
            # behind the rest, soonest needed first; the rest keep arrival order. Under overload that horizon
            # is far and the order is arrival order: ordering every job by need cut first audio but stalled
            # more there (benchmarks/results/live-edf-cpu.json).
            horizon = time.monotonic() + self.expected_wait_s() + (self._batch_s_ewma or 0.0)
            if any(job.needed_by > horizon for job in self._queue):
                self._queue = deque(sorted(self._queue, key=lambda job: _order(job, horizon)))
            # The oldest job (of those needed now) decides the key, so no key can starve another.
            key = self._queue[0].key
            batch: list[_Job[T, R]] = []
            kept: deque[_Job[T, R]] = deque()
            taken: dict[int, int] = {}
            limit = self.current_max_batch_size
            while self._queue and len(batch) < limit:
                job = self._queue.popleft()
                group = job.group
                if job.abandoned:
                    self.jobs_dropped_abandoned += 1
                elif job.key == key and (not group.progressive or taken.get(id(group), 0) <= group.started):
                    batch.append(job)
                    taken[id(group)] = taken.get(id(group), 0) + 1
                else:
                    kept.append(job)
            for job in batch:
                job.group.started += 1
            # Jobs skipped for their key go back in front, in their original order.
            self._queue.extendleft(reversed(kept))
            self._busy_since = time.monotonic()
            return batch

    def _drop_abandoned(self) -> None:
        """Drop jobs nobody waits for, and jobs that cannot finish before their deadline."""
        now = time.monotonic()
        expected = self._batch_s_ewma or 0.0
        if not any(job.abandoned or self._late(job, now, expected) for job in self._queue):
            return
        kept: deque[_Job[T, R]] = deque()
        late: list[_Job[T, R]] = []
        for job in self._queue:
            if job.abandoned:
                self.jobs_dropped_abandoned += 1
            elif self._late(job, now, expected):
                self.jobs_dropped_deadline += 1
                late.append(job)
            else:
                kept.append(job)
        self._queue = kept
        _resolve_all([
            (job, DeadlineExceededError("the request could not be served before its deadline")) for job in late
        ])  # fmt: skip

    @staticmethod
    def _late(job: _Job[T, R], now: float, expected_s: float) -> bool:
        # A job that would still be running at its deadline is dropped before it starts: its caller
        # would be gone by then, and its batch-mates would wait for it for nothing.
        return job.deadline is not None and now + expected_s > job.deadline

    def _execute(self, batch: list[_Job[T, R]]) -> None:
        if not batch:
            self._busy_since = None
            return
        batch.sort(key=lambda job: job.length)
        started = time.monotonic()
        for job in batch:
            job.started_at = started
        try:
            self._run_isolated(batch)
        finally:
            elapsed = time.monotonic() - started
            self._batch_s_ewma = elapsed if self._batch_s_ewma is None else 0.8 * self._batch_s_ewma + 0.2 * elapsed
            self._busy_since = None
            self.batches_run += 1
            self.jobs_run += len(batch)
            if self._on_batch is not None:
                with contextlib.suppress(Exception):  # an observer must never take the worker down
                    self._on_batch(len(batch), elapsed)

    def _run_isolated(self, batch: list[_Job[T, R]]) -> None:
        """Run a batch; if it raises, split it until the failing job is alone, so others still succeed."""
        t0 = time.monotonic()
        try:
            assert self._run_batch is not None
            _running.batch = batch
            try:
                results = self._run_batch([job.item for job in batch])
            finally:
                _running.batch = None
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} jobs")
        except Exception as exc:
            if _is_out_of_memory(exc) and len(batch) > 1:
                # The device ran out of memory for this many rows: halve the batch size for a cool-down
                # period (later batches too) and retry the halves; the failing rows are not at fault.
                self._oom_cap = max(1, min(len(batch) // 2, self.current_max_batch_size))
                self._oom_until = time.monotonic() + self.oom_cooldown_s
                self.oom_events += 1
                log.warning("out of memory with %d rows: batch size capped at %d", len(batch), self._oom_cap)
            if len(batch) == 1:
                log.error("synthesis failed for one job: %s", type(exc).__name__, exc_info=exc)
                _resolve_all([(batch[0], SynthesisError("synthesis failed"))])
                return
            half = len(batch) // 2
            self._run_isolated(batch[:half])
            self._run_isolated(batch[half:])
            return
        inference_s = time.monotonic() - t0
        self._batch_seq += 1
        _resolve_all([
            (job, Completed(value, len(batch), job.started_at - job.enqueued_at, inference_s, self._batch_seq))
            for job, value in zip(batch, results, strict=True)
        ])  # fmt: skip


def _order(job: _Job[Any, Any], horizon: float) -> tuple[bool, float]:
    """Jobs needed by ``horizon`` in arrival order, then the others by when they are needed."""
    later = job.needed_by > horizon
    return later, job.needed_by if later else job.enqueued_at


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError (and torch.OutOfMemoryError) without importing torch here.
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()[:200]


def _resolve_all(outcomes: Sequence[tuple[_Job[Any, Any], Completed[Any] | BaseException]]) -> None:
    """Settle each job's future with its result or exception: one hand-off to each event loop for all of
    them, not one a job. Each ``call_soon_threadsafe`` wakes the loop through a socket write, which lets go
    of the GIL: on the worker thread (a GPU's critical path) every release may cost a wait to get it back."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any, Any], Completed[Any] | BaseException]]]
    by_loop = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        # A closed loop raises RuntimeError: then nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[tuple[_Job[Any, Any], Completed[Any] | BaseException]]) -> None:
    for job, outcome in outcomes:
        if job.future.done():
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)
