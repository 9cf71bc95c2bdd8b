"""A lean HTTP/1.1 client for the load generator: keep-alive connections over asyncio streams.

The load generator shares the machine it measures more often than not (one box running server and
client, or a small client box against a GPU endpoint). httpx spent about 4 ms of CPU a request on a
2-core VM, where the raw socket work is a fraction of a millisecond; at a few hundred requests a
second the client would be measuring itself. This client does only what a load test needs: POST and
GET with a body of known length, responses with ``Content-Length``, chunked, or read to the close;
TLS for ``https`` URLs; a pool of keep-alive connections; one retry when a reused connection turns
out to be closed before any byte of the answer came back. No redirects, cookies, proxies or HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Connections", "HTTPError", "Reply", "audio_offset"]

_MAX_HEAD = 64 * 1024
_READ = 256 * 1024


class HTTPError(Exception):
    """No complete answer: the connection failed or closed early, the answer was malformed, or it timed out."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: status, lower-cased headers, the whole body, and when its first audio byte came."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: Seconds from sending to the first body byte that is audio (past a WAV header); None without audio.
    first_audio_s: float | None


def audio_offset(head: bytes) -> int | None:
    """Where the samples start in a body beginning with ``head``: after a WAV file's ``data`` chunk
    header, at 0 for anything that is not WAV; None while ``head`` is too short to tell."""
    if len(head) < 12:
        return None if b"RIFF".startswith(head[:4]) else 0
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0
    offset = 12
    while offset + 8 <= len(head):
        size = int.from_bytes(head[offset + 4 : offset + 8], "little")
        if head[offset : offset + 4] == b"data":
            return offset + 8
        offset += 8 + size + (size % 2)
    return None


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False

    def close(self) -> None:
        self.writer.close()


class Connections:
    """Keep-alive connections to one origin, at most ``limit`` open at once (callers beyond it wait)."""

    def __init__(self, url: str, *, limit: int, timeout_s: float, clock: Callable[[], float] = time.perf_counter):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.authority = parts.netloc.rpartition("@")[2]
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.timeout_s = timeout_s
        self.clock = clock
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read its whole answer; raises ``HTTPError`` when no complete answer came."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.authority}", "User-Agent: chorus-bench"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            for attempt in range(2):
                connection = self._idle.pop() if self._idle else await self._open()
                reused = connection.used
                keep = False
                try:
                    async with asyncio.timeout(self.timeout_s):
                        reply, keep = await self._exchange(connection, payload, method)
                except _ClosedBeforeAnswer as exc:
                    connection.close()
                    if reused and attempt == 0:
                        continue  # the server had closed the idle connection: once more on a new one
                    raise HTTPError(str(exc)) from None
                except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
                    connection.close()
                    raise HTTPError(f"{type(exc).__name__}: {exc}") from None
                except BaseException:
                    connection.close()
                    raise
                if keep:
                    connection.used = True
                    self._idle.append(connection)
                else:
                    connection.close()
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the idle connections (requests in flight close theirs when they end)."""
        while self._idle:
            self._idle.pop().close()

    async def _open(self) -> _Connection:
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None, limit=_MAX_HEAD
                )
        except (OSError, TimeoutError) as exc:
            raise HTTPError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, payload: bytes, method: str) -> tuple[Reply, bool]:
        reader, writer = connection.reader, connection.writer
        t0 = self.clock()
        try:
            writer.write(payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ClosedBeforeAnswer("the server closed the connection before answering") from None
            raise
        except ConnectionResetError:
            raise _ClosedBeforeAnswer("the server reset the connection before answering") from None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP/1 status line: {status_line[:80]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"malformed header line: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        body = _Body(self.clock, t0)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                await body.read(reader, size)
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("a chunk does not end with CRLF")
        elif "content-length" in headers:
            await body.read(reader, int(headers["content-length"]))
        else:
            keep = False  # the body ends when the connection does
            while data := await reader.read(_READ):
                body.add(data)
        return Reply(status, headers, body.join(), body.first_audio_s), keep


class _ClosedBeforeAnswer(Exception):
    pass


class _Body:
    """Collects body parts and notes when the first audio byte arrived."""

    def __init__(self, clock: Callable[[], float], t0: float) -> None:
        self.clock, self.t0 = clock, t0
        self.parts: list[bytes] = []
        self.size = 0
        self.first_audio_s: float | None = None
        self._audio_at: int | None = None

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.first_audio_s is not None:
            return
        if self._audio_at is None:
            self._audio_at = audio_offset(b"".join(self.parts)[:4096] if len(self.parts) > 1 else data[:4096])
            if self._audio_at is None and self.size >= 4096:
                self._audio_at = 0  # no data chunk in the first 4 KiB: not a WAV we can read, count any byte
        if self._audio_at is not None and self.size > self._audio_at:
            self.first_audio_s = self.clock() - self.t0

    async def read(self, reader: asyncio.StreamReader, size: int) -> None:
        """Read exactly ``size`` bytes (a chunk or a ``Content-Length`` body) as they arrive."""
        while size > 0:
            data = await reader.read(min(size, _READ))
            if not data:
                raise EOFError("the connection closed before the whole body came")
            self.add(data)
            size -= len(data)

    def join(self) -> bytes:
        return b"".join(self.parts)
