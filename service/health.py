"""A second, tiny HTTP listener for /ping when PORT_HEALTH differs from PORT (RunPod's health port)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

__all__ = ["start_health_server"]

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 503: "Service Unavailable", 400: "Bad Request"}


def _response(status: int, body: dict[str, str] | None) -> bytes:
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nConnection: close\r\n"
    if status == 204 or body is None:
        return (head + "\r\n").encode()
    payload = json.dumps(body, separators=(",", ":")).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


async def start_health_server(
    host: str,
    port: int,
    health: Callable[[], tuple[int, dict[str, str] | None]],
    paths: tuple[str, ...] = ("/ping",),
    *,
    shared: bool = False,
) -> asyncio.Server:
    """Serve ``GET`` (and ``HEAD``) on ``paths`` with whatever ``health()`` says at the moment of each request;
    ``shared``: every server process binds the port (SO_REUSEPORT) and the kernel spreads the checks."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (line := await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                if len(line) > 8192:
                    break
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2:
                writer.write(_response(400, {"status": "error", "detail": "malformed request"}))
            elif parts[1].split("?", 1)[0].rstrip("/") not in paths or parts[0] not in ("GET", "HEAD"):
                writer.write(
                    _response(404, {"status": "error", "detail": f"only GET {' or '.join(paths)} is served here"})
                )
            else:
                status, body = health()
                writer.write(_response(status, None if parts[0] == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_port=shared or None)
    log.info("health checks also answered on %s:%d%s", host, port, " and ".join(paths))
    return server
