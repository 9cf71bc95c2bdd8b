"""The composition root: ``create_app`` wires settings, backend, batcher, routes, guard and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import anyio
from litestar import Litestar, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.logging import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.types import Message, Scope

from inference.backends.base import Backend
from service.auth import require_api_key
from service.engine import bring_up
from service.errors import exception_handlers, http_error, request_id
from service.health import start_health_server
from service.logs import BatchedStreamHandler
from service.observability import Metrics, observability_middleware
from service.openai_api import openai_route_error, openai_router
from service.playground import playground_routers
from service.routes import generate_speech, metrics_route, ping_routes, stats
from service.settings import Settings
from service.siblings import Siblings
from service.state import Phase, ServiceState

__all__ = ["create_app"]

log = logging.getLogger("chorus")

MAX_BODY_BYTES = 1024 * 1024


def _lifespan(backend: Backend | None) -> Any:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        chorus: ServiceState = app.state.chorus
        settings = chorus.settings
        # Loading runs in the background so the server answers 204 at once (RunPod's cold-start phase).
        loader = asyncio.create_task(bring_up(chorus, backend), name="chorus-load")
        health_server = None
        if settings.port_health is not None and settings.port_health != settings.port:
            health_server = await start_health_server(
                settings.host,
                settings.port_health,
                chorus.health,
                settings.health_paths(),
                shared=settings.processes > 1,
            )
        restore = _watch_termination(chorus, asyncio.get_running_loop())
        try:
            yield
        finally:
            restore()
            chorus.phase = Phase.DRAINING
            if health_server is not None:
                health_server.close()
            if chorus.siblings is not None:
                chorus.siblings.unmark()
            if not loader.done():
                loader.cancel()  # still loading: bring_up waits for the model thread (bounded), see there
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            batcher = chorus.batcher
            if batcher is not None:
                batcher.close()
                await anyio.to_thread.run_sync(lambda: batcher.stop(drain=True, timeout_s=60.0))
            for pipeline in chorus.pipelines.values():  # CHORUS_MODEL_PROCESS: the children go too
                close = getattr(pipeline.backend, "close", None)
                if callable(close):
                    await anyio.to_thread.run_sync(close)
            for handler in logging.getLogger().handlers:  # the batched log handler's last lines, now
                handler.flush()

    return lifespan


def _watch_termination(chorus: ServiceState, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """On SIGTERM/SIGINT: report draining at once, then let granian drain as it does.

    granian stops accepting and waits for in-flight requests before the lifespan's shutdown runs; until
    then /ping on PORT_HEALTH would still say 200. This Python-level handler runs beside granian's own
    (the event loop learns of the signal through its wakeup fd, whatever Python handler is set), flips
    the state to draining, and bounds the drain: after CHORUS_DRAIN_TIMEOUT_S, jobs still queued fail
    with 503 so that their handlers return and the process can exit.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set signal handlers (tests run apps elsewhere)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def abort_queue() -> None:
        batcher = chorus.batcher
        if batcher is not None:
            log.warning("drain timeout (%.0f s): failing the jobs still queued", chorus.settings.drain_timeout_s)
            threading.Thread(target=lambda: batcher.stop(drain=False, timeout_s=0.0), daemon=True).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if chorus.phase is not Phase.DRAINING:
            # New requests now get 503 (ready_pipeline); the batcher keeps taking the later sentences
            # of streams already answering, so every accepted request can finish.
            chorus.phase = Phase.DRAINING
            loop.call_soon_threadsafe(loop.call_later, chorus.settings.drain_timeout_s, abort_queue)
        handler = previous.get(signal.Signals(signum))
        if callable(handler):
            handler(signum, frame)

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)

    return restore


async def _send_request_id(message: Message, scope: Scope) -> None:
    """Every HTTP response carries ``X-Request-Id``: a ``before_send`` hook, so the router's own 404 and 405,
    which no middleware sees, carry it too."""
    if message["type"] == "http.response.start" and scope["type"] == ScopeType.HTTP:
        message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id(scope).encode())]


def _http_error(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:  # type: ignore[type-arg]
    """An HTTP error that reached the app: under ``/v1`` only the router's own 404 and 405 do (the ``/v1``
    router handles its routes' errors), and those take OpenAI's shape there too."""
    path = request.url.path
    if path == "/v1" or path.startswith("/v1/"):
        return openai_route_error(request, exc)
    return http_error(request, exc)


def _provide_chorus(state: State) -> ServiceState:
    return state.chorus  # type: ignore[no-any-return]


def _cors_config(settings: Settings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None  # off unless configured: browsers on other origins get no CORS headers
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-Id"],
        expose_headers=[
            "X-Request-Id", "X-Batch-Size", "X-Queue-Time-Ms", "X-Inference-Time-Ms",
            "X-Audio-Duration-S", "X-Seed", "X-Sample-Rate", "X-Unsaid-Characters", "X-SSML-Ignored", "Retry-After",
        ],
    )  # fmt: skip


def _openapi_config(settings: Settings) -> OpenAPIConfig | None:
    if settings.docs == "off":
        return None
    # The schema routes live on their own router, so "public" exempts them through opt, like /ping.
    router = Router(path="/schema", route_handlers=[], opt={"auth": settings.docs == "auth"}, include_in_schema=False)
    return OpenAPIConfig(title="Chorus", version="0.1.0", path="/schema", openapi_router=router)


#: An answer sent before its request's body was read waits for at most this much of the body to arrive.
_DRAIN_BYTES = 2 * 1024 * 1024
_DRAIN_S = 5.0


class ChorusApp(Litestar):
    """Litestar, plus two things at the outermost layer, where every answer passes, the router's own 404
    and 405 included:

    * observability (``service.observability``): every request counted, timed and logged;
    * no answer starts while its request's body is unread. Guards, routing (404/405) and body limits
      answer before a handler reads the body. granian then closed the keep-alive connection after the
      answer, and the client's next request on that connection failed with "server disconnected" (under
      load about once in ten thousand refusals; every time when the body came after the headers). Reading
      the rest first (up to ``_DRAIN_BYTES`` and ``_DRAIN_S``; past that the connection just closes) keeps
      the connection usable."""

    def __init__(self, *, chorus: ServiceState, **options: Any) -> None:
        super().__init__(**options)
        self._observed = observability_middleware(self._drain_then_serve, chorus)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # Litestar's own union types
        if scope["type"] == ScopeType.WEBSOCKET:
            await self._observed(scope, receive, send)  # counted and logged like requests (no body to drain)
            return
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _drain_then_serve(self, scope: Any, receive: Any, send: Any) -> None:
        if not _has_body(scope):
            await super().__call__(scope, receive, send)
            return
        body_read = False

        async def tracking_receive() -> Any:
            nonlocal body_read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def draining_send(message: Any) -> None:
            nonlocal body_read
            if message["type"] == "http.response.start" and not body_read:
                body_read = True
                budget = _DRAIN_BYTES
                with anyio.move_on_after(_DRAIN_S):
                    while budget > 0:
                        chunk = await receive()
                        budget -= len(chunk.get("body", b""))
                        if chunk["type"] != "http.request" or not chunk.get("more_body", False):
                            break
            await send(message)

        await super().__call__(scope, tracking_receive, draining_send)


async def require_api_key_and_plain_body(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """The app's one guard: ``require_api_key`` (401), then a compressed request body (``Content-Encoding:
    gzip`` ...) refused with 415 naming the encoding, where it used to be parsed as JSON and refused as "not
    valid JSON". One guard, not two: Litestar copies the route handler for every guard on every request."""
    await require_api_key(connection, handler)
    # Read from the raw headers: building Litestar's Headers object only for this costs more than the check.
    raw = next((value for name, value in connection.scope["headers"] if name == b"content-encoding"), b"")
    encoding = raw.decode("latin-1").strip().lower()
    if encoding and encoding != "identity":
        raise HTTPException(
            status_code=415,
            detail=f"Content-Encoding {encoding!r} is not supported: send the request body uncompressed",
            headers={"Accept-Encoding": "identity"},
        )


def _has_body(scope: Any) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Litestar:
    """Build the app. ``backend`` lets tests hand in a loaded model; otherwise settings name one."""
    settings = settings or Settings.from_env()
    if settings.switch_interval_ms is not None:
        sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chorus = ServiceState(settings=settings, siblings=Siblings(settings.processes) if settings.processes > 1 else None)
    chorus.metrics = Metrics(chorus)
    handlers: list[Any] = [*ping_routes(settings), stats, metrics_route(settings), generate_speech, openai_router]
    if settings.playground:
        handlers += playground_routers()
    return ChorusApp(
        chorus=chorus,
        route_handlers=handlers,
        guards=[require_api_key_and_plain_body],
        dependencies={"chorus": Provide(_provide_chorus, sync_to_thread=False)},
        exception_handlers={**exception_handlers, HTTPException: _http_error},
        lifespan=[_lifespan(backend)],
        before_send=[_send_request_id],
        # Litestar configures the root logger itself (at INFO unless told): it must get the operator's level,
        # or CHORUS_LOG_LEVEL=WARNING would still write an access-log line per request.
        logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["chorus"]},
            # Litestar's own queue handler costs the event loop a formatted copy and a thread wake-up per line.
            handlers={"chorus": {"()": BatchedStreamHandler, "formatter": "standard"}},
            loggers={"litestar": {"level": "INFO", "handlers": ["chorus"], "propagate": False}},
        ),
        state=State({"chorus": chorus}),
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=_openapi_config(settings),
        cors_config=_cors_config(settings),
    )
