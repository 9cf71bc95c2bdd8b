"""One table from engine errors to HTTP status codes, and the JSON shape every error takes."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException

from inference.errors import (
    BatcherStoppedError,
    DeadlineExceededError,
    InferenceError,
    InvalidTextError,
    QueueFullError,
    SynthesisError,
    UnknownVoiceError,
    UnsupportedParameterError,
)

__all__ = [
    "ClientDisconnectedError",
    "ServiceUnavailableError",
    "UnprocessableError",
    "error_response",
    "exception_handlers",
]

log = logging.getLogger(__name__)


class UnprocessableError(HTTPException):
    """Well-formed JSON that asks for something this server cannot do (422)."""

    status_code = 422


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready (logged as 499, sent to nobody)."""


class ServiceUnavailableError(HTTPException):
    """Loading, draining or stopped (503); carries a Retry-After."""

    status_code = 503


# Engine error → (status, whether a Retry-After applies). The only place status codes are chosen.
STATUS_TABLE: dict[type[InferenceError], int] = {
    QueueFullError: 429,
    BatcherStoppedError: 503,
    InvalidTextError: 422,
    UnknownVoiceError: 422,
    UnsupportedParameterError: 422,
    SynthesisError: 500,
    DeadlineExceededError: 504,
}


def error_response(
    request: Request,  # type: ignore[type-arg]
    status: int,
    detail: str,
    *,
    retry_after_s: int | None = None,
) -> Response[dict[str, object]]:
    """``{"status_code", "detail", "request_id"}`` (Litestar's shape plus the request id)."""
    body: dict[str, object] = {"status_code": status, "detail": detail}
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return Response(body, status_code=status, headers=headers)


def _inference_error(request: Request, exc: InferenceError) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    status = next((code for kind, code in STATUS_TABLE.items() if isinstance(exc, kind)), 500)
    retry_after = None
    if isinstance(exc, QueueFullError):
        retry_after = max(1, round(exc.retry_after_s))
    elif status == 503:
        retry_after = 5
    detail = str(exc) if status != 500 else "synthesis failed; quote the request id when reporting it"
    return error_response(request, status, detail, retry_after_s=retry_after)


def _unavailable(request: Request, exc: ServiceUnavailableError) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    return error_response(request, 503, exc.detail, retry_after_s=int((exc.headers or {}).get("Retry-After", 5)))


def _disconnected(request: Request, exc: ClientDisconnectedError) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    request.app.state.chorus.requests_disconnected += 1
    return error_response(request, 499, "the client closed the connection")


def _too_deep(request: Request, exc: RecursionError) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    # msgspec raises RecursionError for JSON nested thousands deep; that is bad input, not a crash.
    return error_response(request, 400, "the JSON body is nested too deeply")


def _internal(request: Request, exc: Exception) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    log.error("unhandled %s while serving %s", type(exc).__name__, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal error; quote the request id when reporting it")


exception_handlers = {
    InferenceError: _inference_error,
    ServiceUnavailableError: _unavailable,
    ClientDisconnectedError: _disconnected,
    RecursionError: _too_deep,
    500: _internal,
}
