"""The load generator's HTTP/1.1 client against small scripted servers on real sockets."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import pytest

from inference.audio.wav import wav_header
from service.bench.client import Connections, HTTPError, audio_offset

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head[:-4].decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return first, headers, body


def run_with_server(handler: Handler, test: Callable[[str, list[int]], Awaitable[None]]) -> list[int]:
    """Serve ``handler`` (given each connection's number) on a free port while ``test(url, opened)`` runs."""
    opened: list[int] = []

    async def main() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            opened.append(len(opened))
            try:
                await handler(reader, writer, opened[-1])
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await test(f"http://127.0.0.1:{port}", opened)

    asyncio.run(main())
    return opened


def test_keep_alive_connections_are_reused_and_requests_arrive_whole() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            request = await read_request(reader)
            seen.append(request)
            body = b"hello " + request[2]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Batch-Size: 3\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def test(url: str, opened: list[int]) -> None:
        client = Connections(url + "/prefix/", limit=4, timeout_s=10)
        for i in range(3):
            reply = await client.request("POST", "/generate", b"n%d" % i, {"X-API-Key": "k"})
            assert (reply.status, reply.body, reply.headers["x-batch-size"]) == (200, b"hello n%d" % i, "3")
        client.close()

    assert run_with_server(handler, test) == [0]  # one connection for all three
    first, headers, body = seen[0]
    assert first == "POST /prefix/generate HTTP/1.1"
    assert headers["x-api-key"] == "k"
    assert headers["content-length"] == "2"
    assert headers["host"].startswith("127.0.0.1:")
    assert body == b"n0"


def test_chunked_answers_and_the_first_audio_byte_is_past_the_wav_header() -> None:
    now = [0.0]
    header = wav_header(16000, None)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        now[0] = 1.0  # the header goes out before any synthesis...
        writer.write(b"%x\r\n%s\r\n" % (len(header), header))
        await writer.drain()
        await asyncio.sleep(0.05)
        now[0] = 2.0  # ...the first samples later
        writer.write(b"4;ext=1\r\n\x01\x00\x02\x00\r\n0\r\nX-Trailer: yes\r\n\r\n")
        await writer.drain()

    async def test(url: str, opened: list[int]) -> None:
        client = Connections(url, limit=1, timeout_s=10, clock=lambda: now[0])
        reply = await client.request("POST", "/generate", b"{}")
        assert reply.body == header + b"\x01\x00\x02\x00"
        assert reply.first_audio_s == 2.0
        client.close()

    run_with_server(handler, test)


def test_an_idle_connection_the_server_closed_is_retried_once_on_a_new_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        # Keep-alive promised, then the connection closes (an idle timeout on the server's side).
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def test(url: str, opened: list[int]) -> None:
        client = Connections(url, limit=1, timeout_s=10)
        for _ in range(3):
            assert (await client.request("GET", "/ping")).body == b"ok"
        client.close()

    assert run_with_server(handler, test) == [0, 1, 2]


def test_connection_close_and_a_body_read_to_the_end() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n" + b"x" * 300_000)
        await writer.drain()

    async def test(url: str, opened: list[int]) -> None:
        client = Connections(url, limit=2, timeout_s=10)
        for _ in range(2):
            reply = await client.request("GET", "/ping")
            assert (reply.status, len(reply.body), reply.headers["retry-after"]) == (503, 300_000, "5")

    assert run_with_server(handler, test) == [0, 1]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed inside the body
        b"SMTP ready\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # a malformed header
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a malformed chunk size
        b"",  # closed without a word, on a fresh connection: not retried
    ],
)
def test_broken_answers_are_http_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def test(url: str, opened: list[int]) -> None:
        with pytest.raises(HTTPError):
            await Connections(url, limit=1, timeout_s=10).request("GET", "/")

    assert run_with_server(handler, test) == [0]


def test_a_server_that_never_answers_times_out_and_a_closed_port_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await asyncio.sleep(30)

    async def test(url: str, opened: list[int]) -> None:
        with pytest.raises(HTTPError, match="TimeoutError"):
            await Connections(url, limit=1, timeout_s=0.2).request("GET", "/")

    run_with_server(handler, test)

    async def closed() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(HTTPError, match="cannot connect"):
            await Connections(f"http://127.0.0.1:{port}", limit=1, timeout_s=5).request("GET", "/")

    asyncio.run(closed())


def test_audio_offset_finds_the_samples_of_a_wav_and_passes_anything_else() -> None:
    header = wav_header(22050, 4)
    assert audio_offset(header + b"\x00" * 4) == 44
    assert audio_offset(header[:20]) is None  # too short to tell yet
    assert audio_offset(b"RI") is None
    # A LIST chunk before the data (what ffmpeg writes) moves the samples back.
    riff = header[:12] + header[12:36] + b"LIST" + struct.pack("<I", 5) + b"abcde\x00" + header[36:]
    assert audio_offset(riff) == 44 + 14
    assert audio_offset(b"ID3\x04 an mp3") == 0
    assert audio_offset(b"\x01\x02") == 0  # raw PCM
    with pytest.raises(ValueError, match="not an http"):
        Connections("ftp://example.com", limit=1, timeout_s=1)


@pytest.mark.parametrize("honour", [True, False])
def test_a_closed_loop_caller_waits_out_a_refusals_retry_after_unless_told_not_to(honour: bool) -> None:
    from service.bench.loadgen import Target, closed_loop

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            body = b'{"status_code":429,"detail":"the synthesis queue is full"}'
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body), body))  # fmt: skip
            await writer.drain()

    outcomes = []

    async def test(url: str, opened: list[int]) -> None:
        target = Target(url=url, honour_retry_after=honour)
        found, _ = await closed_loop(target, 2, duration_s=0.5, quiet=True)
        outcomes.extend(found)

    run_with_server(handler, test)
    assert {o.status for o in outcomes} == {429}
    assert {o.retry_after_s for o in outcomes} == {5.0}
    if honour:
        assert len(outcomes) == 2  # each caller waits (to the run's end, sooner than 5 s) after its refusal
    else:
        assert len(outcomes) > 10  # retried at once, over and over
