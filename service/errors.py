"""One table from engine errors to HTTP status codes, and the JSON shape every error takes."""

from __future__ import annotations

import logging
import random
import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.types import Scope

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
    "client_error",
    "error_response",
    "exception_handlers",
    "http_error",
    "inference_status",
    "request_id",
]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(scope: Scope) -> str:
    """The request's id: the client's ``X-Request-Id`` when well formed (letters, digits, ``._:-``, at most
    128), else a new one; made once, kept in the scope's state, where logs and error bodies read it."""
    state = scope.setdefault("state", {})
    known = state.get("request_id")
    if not isinstance(known, str):
        supplied = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"").decode("latin-1")
        known = state["request_id"] = supplied if _REQUEST_ID.match(supplied) else new_request_id()
    return known


# The version (4) and variant (RFC 4122) bits that uuid.UUID(int=..., version=4) sets; set here 5x faster.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """32 hex digits (a version-4 UUID) from the process's own generator, not ``uuid4``: its
    ``os.urandom`` is a system call that lets go of the interpreter lock on every request (see
    ``service.synthesis.random_seed``). An id only has to be unique, not unguessable."""
    return f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


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


def inference_status(exc: InferenceError) -> int:
    """The HTTP status an engine error answers with (500 for any other)."""
    return next((code for kind, code in STATUS_TABLE.items() if isinstance(exc, kind)), 500)


def error_response(
    request: Request,  # type: ignore[type-arg]
    status: int,
    detail: str,
    *,
    retry_after_s: int | None = None,
    extra: object = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, object]]:
    """``{"status_code", "detail", "request_id"}`` (Litestar's shape plus the request id; ``extra`` when given)."""
    body: dict[str, object] = {"status_code": status, "detail": detail, "request_id": request_id(request.scope)}
    if extra:
        body["extra"] = extra
    headers = dict(headers or {})
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return Response(body, status_code=status, headers=headers or None)


def client_error(exc: HTTPException) -> tuple[str, str | None]:
    """(message, field) for Litestar's own refusals of a body, in words that name the problem.

    Litestar says "Validation failed for POST /generate" and puts the field in ``extra``; a body that is no
    JSON at all comes with msgspec's bare "Input data was truncated"; an empty body, with "'data'".
    """
    cause = exc.__cause__
    if isinstance(cause, SerializationException):
        return f"the request body is not valid JSON ({cause})", None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict):
            key, message = first.get("key"), str(first.get("message", exc.detail))
            if key == "data":  # the body as a whole
                if message == "'data'":
                    return "the request body is empty: send a JSON object", None
                if message.startswith("Object missing required field `"):
                    name = message.split("`")[1]
                    return f"the field {name!r} is required", name
                if message.startswith("Expected `object`"):
                    return f"the request body must be a JSON object ({message})", None
                return message, None
            if key:
                return f"{message} (field {key!r})", str(key)
    return exc.detail, None


def http_error(request: Request, exc: HTTPException) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    """Litestar's shape (``status_code``, ``detail``, ``extra`` when it has one), the detail in plain words."""
    detail, _ = client_error(exc)
    return error_response(request, exc.status_code, detail, extra=exc.extra, headers=exc.headers)


def _inference_error(request: Request, exc: InferenceError) -> Response[dict[str, object]]:  # type: ignore[type-arg]
    status = inference_status(exc)
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
    HTTPException: http_error,
    InferenceError: _inference_error,
    ServiceUnavailableError: _unavailable,
    ClientDisconnectedError: _disconnected,
    RecursionError: _too_deep,
    500: _internal,
}
