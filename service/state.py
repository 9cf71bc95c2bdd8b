"""The service's shared state: lifecycle phase, the loaded backend and its batcher."""

from __future__ import annotations

import asyncio
import enum
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from inference import MicroBatcher
from inference.backends.base import Backend, SynthesisJob, Voiced
from inference.speech import SpeechPipeline
from service.settings import Settings
from service.siblings import Siblings

__all__ = ["Phase", "ServiceState"]


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (called from a plain thread)
        return 0


class Phase(enum.Enum):
    """Where the service is in its life; /ping reports it."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(eq=False)
class ServiceState:
    """Shared by the HTTP handlers, the health port and the lifespan."""

    settings: Settings
    phase: Phase = Phase.LOADING
    backend: Backend | None = None
    batcher: MicroBatcher[SynthesisJob, Voiced] | None = None
    pipeline: SpeechPipeline | None = None  # the first (default) model's
    #: Every served model's pipeline by name, and language → model name (CHORUS_MODELS routes).
    pipelines: dict[str, SpeechPipeline] = field(default_factory=dict)
    language_routes: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    load_s: float | None = None
    requests_disconnected: int = 0
    #: Live WebSocket sessions open now, and the seconds their listeners waited for audio whose text the
    #: engine already had (``service.live.Listener.sent``: the engine fell behind real time).
    live_sessions: int = 0
    live_late_s: float = 0.0
    metrics: Any = None  # service.observability.Metrics, set by create_app
    #: The other server processes' readiness (CHORUS_PROCESSES > 1), else None.
    siblings: Siblings | None = None

    def stats(self) -> dict[str, Any]:
        """Counters for operators (and the tests that prove jobs were dropped)."""
        batcher = self.batcher
        return {
            "phase": self.phase.value,
            "queue_depth": batcher.queue_depth if batcher else 0,
            "batches_run": batcher.batches_run if batcher else 0,
            "jobs_run": batcher.jobs_run if batcher else 0,
            "jobs_dropped_disconnected": batcher.jobs_dropped_abandoned if batcher else 0,
            "jobs_dropped_deadline": batcher.jobs_dropped_deadline if batcher else 0,
            "jobs_refused_overload": batcher.jobs_refused if batcher else 0,
            "oom_events": batcher.oom_events if batcher else 0,
            "max_batch_size_now": batcher.current_max_batch_size if batcher else 0,
            "requests_disconnected": self.requests_disconnected,
            "live_sessions": self.live_sessions,
            "live_late_s": round(self.live_late_s, 3),
            "threads": threading.active_count(),
            "pid": os.getpid(),  # with CHORUS_PROCESSES > 1 each process answers for itself
            "processes": self.settings.processes,
            "tasks": _task_count(),
        }

    def health(self) -> tuple[int, dict[str, str] | None]:
        """(status code, JSON body or None) for /ping: 204 loading, 200 ready, 503 failed or draining."""
        batcher = self.batcher
        if self.phase is Phase.READY and batcher is not None:
            if not batcher.alive:
                return 503, {"status": "error", "detail": "the inference worker has stopped"}
            if any(not getattr(p.backend, "alive", True) for p in self.pipelines.values()):
                return 503, {"status": "error", "detail": "the model process has stopped"}
            if batcher.busy_for_s > self.settings.watchdog_s:
                # A batch that never ends: the platform should replace this worker.
                return 503, {"status": "error", "detail": "the inference worker is stuck"}
        if self.phase is Phase.LOADING:
            return 204, None
        if self.phase is Phase.READY:
            if self.siblings is not None and not self.siblings.all_ready():
                return 204, None  # this process is, another is still loading
            return 200, {"status": "ok"}
        if self.phase is Phase.DRAINING:
            return 503, {"status": "draining", "detail": "the server is shutting down"}
        return 503, {"status": "error", "detail": self.failure or "the model failed to load"}
