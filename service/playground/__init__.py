"""The web playground: one page, served from the package, that calls the API like any client would.

``GET /`` redirects to ``/playground``; the page's script and style sheet are files under
``/playground/static``; ``GET /playground/config`` tells the page whether it must ask for a key.
None of these need a key (they hold nothing secret): the page sends the key the user types, kept only
in the tab's memory, with each API call. ``CHORUS_PLAYGROUND=0`` leaves all of it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import MediaType, Response, get
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from service.state import ServiceState

__all__ = ["PAGE_SECURITY_HEADERS", "STATIC_DIR", "playground_routers"]

STATIC_DIR = Path(__file__).parent / "static"

#: The page loads nothing from elsewhere and may not be framed; audio plays from blob: URLs it makes.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@get("/", opt={"auth": False}, include_in_schema=False)
async def root() -> Redirect:
    """The API's root is the playground."""
    return Redirect("/playground")


@get("/playground", opt={"auth": False}, include_in_schema=False)
async def playground_page() -> Response[bytes]:
    """The page itself (read per request: it is small, and edits show without a restart)."""
    page = (STATIC_DIR / "index.html").read_bytes()
    return Response(page, media_type=MediaType.HTML, headers=PAGE_SECURITY_HEADERS)  # Litestar adds the charset


@get("/playground/config", opt={"auth": False}, include_in_schema=False)
async def playground_config(chorus: ServiceState) -> dict[str, Any]:
    """What the page needs before its first API call: whether to ask for a key, and the limits."""
    return {
        "auth_required": bool(chorus.settings.api_keys),
        "max_input_chars": 4096,
        "docs": chorus.settings.docs,
    }


def playground_routers() -> list[Any]:
    """The page, its config and its static files."""
    static = create_static_files_router(
        path="/playground/static",
        directories=[STATIC_DIR],
        opt={"auth": False},
        include_in_schema=False,
        name="playground-static",
    )
    return [root, playground_page, playground_config, static]
