"""The API-key guard. Routes opt out with ``opt={"auth": False}``; nothing matches on paths."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

__all__ = ["api_key_problem", "key_matches", "require_api_key"]

API_KEY_HEADER = "x-api-key"


def key_matches(supplied: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit, so timing says nothing)."""
    supplied_bytes = supplied.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(supplied_bytes, key.encode("utf-8", "surrogateescape"))
    return found


async def require_api_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Refuse with 401 unless ``X-API-Key`` is one of the configured keys (when any are configured).

    A coroutine function although it never awaits: Litestar runs a plain-function guard in a thread pool,
    a round trip through another thread on every request (``/ping`` included) for a few comparisons.
    """
    if not handler.opt.get("auth", True):
        return
    # ElevenLabs-compatible routes also take the key the way ElevenLabs clients send it.
    xi = bool(handler.opt.get("xi_api_key"))
    others = (connection.headers.get("xi-api-key") or "",) if xi else ()
    where = "xi-api-key, X-API-Key or Authorization: Bearer" if xi else ""
    problem = api_key_problem(connection, bearer=handler.opt.get("bearer", False), others=others, where=where)
    if problem is not None:
        raise NotAuthorizedException(problem)


def api_key_problem(
    connection: ASGIConnection,  # type: ignore[type-arg]
    *,
    bearer: bool,
    others: tuple[str, ...] = (),
    where: str = "",
) -> str | None:
    """Why the connection's key is refused, or None when it is accepted (or no key is configured).

    ``bearer``: OpenAI clients send the key as a bearer token. Behind RunPod that header carries RunPod's
    own key, so X-API-Key must keep working: either one suffices. ``others``: keys the client gave some
    other way (ElevenLabs clients: ``xi-api-key``), named by ``where`` when none is given.
    """
    keys: tuple[str, ...] = connection.app.state.chorus.settings.api_keys
    if not keys:
        return None
    candidates = [key for key in others if key]
    if (api_key := connection.headers.get(API_KEY_HEADER)) is not None:
        candidates.append(api_key)
    if bearer:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            candidates.append(token.strip())
    if not candidates:
        where = where or ("X-API-Key or Authorization: Bearer" if bearer else "the X-API-Key header")
        return f"an API key is required: send it in {where}"
    if not any(key_matches(candidate, keys) for candidate in candidates):
        return "the API key is not valid"
    return None
