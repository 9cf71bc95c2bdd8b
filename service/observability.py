"""Prometheus metrics and one JSON log line per request.

Counters that the batcher already keeps (jobs run, dropped, refused) are read at scrape time by a
collector rather than counted twice. Requests are labelled by route template from a fixed list, so a
client cannot grow the label set by inventing paths. Logs carry no text and no key.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.errors import request_id
from service.state import ServiceState

__all__ = ["CONTENT_TYPE", "Metrics", "observability_middleware", "route_label"]

#: Prometheus' text format; Litestar appends "; charset=utf-8" to every text/* media type itself.
CONTENT_TYPE = "text/plain; version=0.0.4"
ROUTES = (
    "/ping", "/generate", "/stats", "/metrics", "/v1/audio/speech", "/v1/models", "/v1/audio/voices",
    "/v1/audio/speech/stream-input",
)  # fmt: skip
access_log = logging.getLogger("chorus.access")

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _EngineCollector(Collector):
    """Reads the batcher's own counters and gauges at scrape time."""

    def __init__(self, chorus: ServiceState) -> None:
        self.chorus = chorus

    def collect(self) -> Iterator[Any]:
        stats = self.chorus.stats()
        yield GaugeMetricFamily(
            "chorus_queue_depth", "Jobs (sentences) waiting for a batch", value=stats["queue_depth"]
        )
        yield CounterMetricFamily("chorus_batches", "Batches run", value=stats["batches_run"])
        yield CounterMetricFamily("chorus_jobs", "Jobs (sentences) synthesized", value=stats["jobs_run"])
        dropped = CounterMetricFamily("chorus_jobs_dropped", "Jobs dropped unsynthesized", labels=["reason"])
        dropped.add_metric(["disconnect"], stats["jobs_dropped_disconnected"])
        dropped.add_metric(["deadline"], stats["jobs_dropped_deadline"])
        dropped.add_metric(["overload"], stats["jobs_refused_overload"])
        yield dropped
        yield CounterMetricFamily("chorus_oom_events", "Out-of-memory batch splits", value=stats["oom_events"])
        yield GaugeMetricFamily("chorus_live_sessions", "Live WebSocket sessions open", value=stats["live_sessions"])
        yield CounterMetricFamily(
            "chorus_live_late_seconds",
            "Seconds live listeners waited for audio whose text the engine already had (estimated from real-time "
            "playback of what was sent): the engine falling behind real time",
            value=self.chorus.live_late_s,
        )
        if self.chorus.load_s is not None:
            yield GaugeMetricFamily("chorus_model_load_seconds", "Load and warm-up time", value=self.chorus.load_s)
        memory = getattr(self.chorus.backend, "device_memory", None)
        if callable(memory):
            gpu = GaugeMetricFamily("chorus_gpu_memory_bytes", "Accelerator memory", labels=["kind"])
            for kind, value in memory().items():
                gpu.add_metric([kind], value)
            yield gpu


class Metrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, chorus: ServiceState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chorus_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "chorus_request_seconds", "Request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.queue = Histogram(
            "chorus_queue_seconds",
            "Time a request waited for its batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "chorus_batch_size", "Rows per batch", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.audio = Counter("chorus_audio_seconds", "Audio produced", registry=self.registry)
        self.registry.register(_EngineCollector(chorus))

    def observe_batch(self, size: int, seconds: float) -> None:
        """Called by the batcher's worker thread after every batch."""
        self.batch_size.observe(size)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


_ELEVENLABS_SUFFIXES = ("", "stream", "with-timestamps", "stream/with-timestamps", "stream-input", "multi-stream-input")


def route_label(path: str, health_paths: tuple[str, ...]) -> str:
    """The route template a path is counted under: a fixed set, so that no request can add a label."""
    path = path.rstrip("/") or "/"
    if path in ROUTES:
        return path
    if path in health_paths:
        return "/ping"  # HEALTH_CHECK_PATH: the same health check, counted and left out of the log alike
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if path.startswith("/v1/text-to-speech/"):  # the ElevenLabs-compatible routes, one label whatever the voice
        suffix = path.split("/", 4)[4] if path.count("/") >= 4 else ""
        if suffix in _ELEVENLABS_SUFFIXES:
            return "/v1/text-to-speech/{voice_id}" + (f"/{suffix}" if suffix else "")
    if path == "/schema" or path.startswith("/schema/"):
        return "/schema"
    return "other"


def observability_middleware(app: ASGIApp, chorus: ServiceState) -> ASGIApp:
    """Count, time and log every HTTP request and WebSocket session (one JSON line; never the text, never a key).

    It wraps the whole application, not Litestar's route middleware, so that the router's own 404 and 405
    (which never reach a route's middleware) are counted and logged too."""

    health_paths = chorus.settings.health_paths()  # once: the settings never change

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:  # HTTP and WebSocket scopes
        started = time.monotonic()
        # A WebSocket closed before it was accepted was refused (ASGI: the server answers 403).
        status = 500 if scope["type"] == ScopeType.HTTP else 403
        route = route_label(scope["path"], health_paths)
        close_code: int | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, close_code
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.close":
                close_code = message.get("code", 1000)
            await send(message)

        try:
            await app(scope, receive, send_and_watch)
        finally:
            elapsed = time.monotonic() - started
            state = scope.get("state", {})
            metrics: Metrics | None = chorus.metrics
            facts: dict[str, Any] = state.get("synthesis", {})
            if metrics is not None:
                metrics.requests.labels(route, str(status)).inc()
                metrics.latency.labels(route).observe(elapsed)
                if "queue_ms" in facts:
                    metrics.queue.observe(facts["queue_ms"] / 1000)
                if "audio_s" in facts:
                    metrics.audio.inc(facts["audio_s"])
            if route != "/ping" and route != "/metrics" and access_log.isEnabledFor(logging.INFO):
                record = {
                    "request_id": request_id(scope),
                    "route": route,
                    "method": scope.get("method", "WEBSOCKET"),
                    "status": status,
                    **({"close_code": close_code} if close_code is not None else {}),
                    "ms": round(elapsed * 1000, 1),
                    **facts,
                }
                access_log.info(json.dumps(record, separators=(",", ":")))

    return middleware
