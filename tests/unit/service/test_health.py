from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

from inference import MicroBatcher
from service.settings import Settings
from service.siblings import Siblings
from service.state import Phase, ServiceState


async def test_a_stuck_batch_turns_ping_to_503() -> None:
    gate = threading.Event()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        lambda items: [gate.wait(10) and "" for _ in items], max_batch_size=1, max_queue_size=4
    )
    batcher.start().result(timeout=10)
    chorus = ServiceState(settings=Settings(watchdog_s=0.2), phase=Phase.READY, batcher=batcher)  # type: ignore[arg-type]
    assert chorus.health() == (200, {"status": "ok"})
    job = asyncio.ensure_future(batcher.submit("slow"))
    await asyncio.sleep(0.4)
    status, body = chorus.health()
    assert status == 503
    assert body is not None
    assert "stuck" in body["detail"]
    gate.set()
    await job
    # The worker thread clears its busy mark just after it has handed the results out: give it a moment.
    for _ in range(500):
        if chorus.health()[0] == 200:
            break
        await asyncio.sleep(0.01)
    assert chorus.health()[0] == 200
    batcher.stop()


def test_health_by_phase() -> None:
    chorus = ServiceState(settings=Settings())
    assert chorus.health() == (204, None)
    chorus.phase = Phase.FAILED
    chorus.failure = "model failed to load: /x: no such file"
    assert chorus.health() == (503, {"status": "error", "detail": "model failed to load: /x: no such file"})
    chorus.phase = Phase.DRAINING
    assert chorus.health()[0] == 503


def test_ping_says_ready_only_when_every_server_process_is(tmp_path: Path) -> None:
    directory = tmp_path / "ready"
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        own = Siblings(2, directory)
        other = Siblings(2, directory, pid=sibling.pid)
        chorus = ServiceState(settings=Settings(processes=2), phase=Phase.READY, siblings=own)
        own.mark_ready()
        assert own.ready() == 1
        assert chorus.health() == (204, None)  # this process is ready, the other still loads
        other.mark_ready()
        assert own.ready() == 2
        assert chorus.health() == (200, {"status": "ok"})
        sibling.kill()
        sibling.wait()
        assert own.ready() == 1  # a dead process's mark does not count...
        assert chorus.health() == (200, {"status": "ok"})  # ...but once all were ready, a restart is not waited for
        fresh = Siblings(2, directory)
        fresh.mark_ready()
        assert fresh.all_ready() is False  # a process started later counts the marks of the living only
    finally:
        sibling.kill()
        sibling.wait()
    own.unmark()
    assert not directory.exists()  # the last one out removes the folder


def test_siblings_default_to_a_folder_named_by_the_parent_process() -> None:
    siblings = Siblings(2)
    assert siblings.directory.name == f"chorus-ready-{os.getppid()}"
    assert siblings.pid == os.getpid()
