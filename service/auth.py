"""The API-key guard. Routes opt out with ``opt={"auth": False}``; nothing matches on paths."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

__all__ = ["key_matches", "require_api_key"]

API_KEY_HEADER = "x-api-key"


def key_matches(supplied: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit, so timing says nothing)."""
    supplied_bytes = supplied.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(supplied_bytes, key.encode("utf-8", "surrogateescape"))
    return found


def require_api_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Refuse with 401 unless ``X-API-Key`` is one of the configured keys (when any are configured)."""
    if not handler.opt.get("auth", True):
        return
    keys: tuple[str, ...] = connection.app.state.chorus.settings.api_keys
    if not keys:
        return
    supplied = connection.headers.get(API_KEY_HEADER)
    if supplied is None:
        raise NotAuthorizedException("an API key is required: send it in the X-API-Key header")
    if not key_matches(supplied, keys):
        raise NotAuthorizedException("the API key is not valid")
