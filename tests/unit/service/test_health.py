from __future__ import annotations

import asyncio
import threading

from inference import MicroBatcher
from service.settings import Settings
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
