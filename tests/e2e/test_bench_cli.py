"""``chorus bench`` against the real server (tiny model): closed and open loop, result files, auth."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, chorus_command, running_server

pytestmark = pytest.mark.slow

KEY = "bench-key-31"
REQUIRED = {"system", "concurrency", "requests", "errors", "throughput_audio_s_per_s", "requests_per_s", "p50_ms",
            "p90_ms", "p99_ms", "ttfb_p50_ms"}  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "API_KEY": KEY, "CHORUS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("bench"), env) as running:
        yield running


def bench(server: Server, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "RUNPOD_API_KEY")}
    if key is not None:
        env["API_KEY"] = key
    return subprocess.run(
        [*chorus_command(), "bench", server.url, "--quiet", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def poisson_arrivals(rate: float, duration_s: float, seed: int = 0) -> int:
    """How many arrivals the harness's seeded Poisson process makes within the duration."""
    rng, t, count = random.Random(seed), 0.0, 0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return count
        count += 1


def test_bench_sweeps_and_writes_json_markdown_and_plots(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = bench(server, "--concurrency", "1,4", "--rates", "6", "--duration", "3", "--warmup", "1",
                 "--out", str(out), "--system", "tiny")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert set(document["machine"]) >= {"cpu", "cores", "gpu", "torch", "transformers"}
    assert document["model"] == server_model_name(server)
    closed = [r for r in document["rows"] if r["mode"] == "closed"]
    opened = [r for r in document["rows"] if r["mode"] == "open"]
    assert [r["concurrency"] for r in closed] == [1, 4]
    for row in document["rows"]:
        assert set(row) >= REQUIRED
        assert row["system"] == "tiny"
        assert row["errors"] == 0
        assert row["requests"] > 0
        assert row["throughput_audio_s_per_s"] > 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert sum(row["batch_sizes"].values()) == row["requests"]  # X-Batch-Size read from every answer
    assert closed[1]["batch_sizes"] != {"1": closed[1]["requests"]}  # four callers share batches
    assert opened[0]["rate_rps"] == 6
    assert opened[0]["requests"] == poisson_arrivals(6, 3.0)  # open loop: arrivals do not wait for answers
    assert (tmp_path / "run.md").read_text().count("| tiny |") == 3
    assert (tmp_path / "run-throughput.png").stat().st_size > 1000
    assert (tmp_path / "run-p99.png").stat().st_size > 1000
    assert "| tiny | 4 |" in done.stdout


def server_model_name(server: Server) -> str:
    import urllib.request

    request = urllib.request.Request(server.url + "/v1/models", headers={"X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["data"][0]["id"])


def test_a_wrong_key_is_reported_as_errors_and_a_failing_exit(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "denied.json"
    done = bench(server, "--concurrency", "2", "--duration", "1", "--warmup", "0", "--out", str(out), key="nope")
    assert done.returncode == 1
    row = json.loads(out.read_text())["rows"][0]
    assert row["errors"] == row["requests"] > 0
    assert set(row["errors_by_status"]) == {"401"}
    assert "nope" not in done.stdout + done.stderr + out.read_text()


def test_an_operators_own_texts_are_what_is_sent(server: Server, tmp_path: Path) -> None:
    texts = tmp_path / "ours.txt"
    texts.write_text("Your order has shipped.\nThank you for calling.\n", encoding="utf-8")
    out = tmp_path / "ours.json"
    done = bench(server, "--concurrency", "1", "--duration", "1", "--warmup", "0", "--texts", str(texts),
                 "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    assert document["texts"] == {"source": str(texts), "count": 2, "mean_chars": 22.5}
    row = document["rows"][0]
    per_request = row["chars_per_s"] * row["wall_s"] / row["requests"]
    assert 21.5 <= per_request <= 23.5  # our two texts (23 and 22 characters), not the built-in set
    missing = bench(server, "--texts", str(tmp_path / "none.txt"))
    assert missing.returncode == 2
    assert "--texts: cannot read" in missing.stderr


def test_an_unreachable_url_is_a_clear_error() -> None:
    done = subprocess.run([*chorus_command(), "bench", "http://127.0.0.1:9", "--quiet"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in done.stderr


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [("POST", "/generate", "wrong", b"401"), ("POST", "/nowhere", KEY, b"404"), ("PUT", "/generate", KEY, b"405")],
)
def test_an_answer_given_before_the_body_is_read_keeps_the_connection_usable(
    server: Server, method: str, path: str, key: str, status: bytes
) -> None:
    """Guards, routing and limits answer before the body is read; if that answer went out with the body
    unread, granian closed the keep-alive connection and a client's next request on it failed (status 0)."""
    import socket
    import time

    body = json.dumps({"text": "Hello there.", "language": "en"}).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        time.sleep(0.3)  # the body comes after the headers, as it can from any client
        conn.sendall(body)
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")  # the next request, same connection
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 ") < 2 and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 " + status)
    assert b"HTTP/1.1 200" in received  # /ping answered on the same connection


def test_bench_live_holds_conversations_over_the_websocket(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    done = bench(server, "--live", "--concurrency", "1,3", "--duration", "3", "--warmup", "0", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["concurrency"]) for r in rows] == [("live", 1), ("live", 3)]
    for row in rows:
        assert row["requests"] >= row["concurrency"]
        assert row["errors"] == 0, row
        assert row["throughput_audio_s_per_s"] > 0
        assert row["ttfa_p50_ms"] > 0
        assert row["stalled_sessions"] <= row["requests"]
        assert 0 <= row["server_late_s"] <= row["stall_s"] + 0.5  # the server's view: only what it was late for
    assert "first audio p50 ms" in done.stdout
    refused = bench(server, "--live", "--concurrency", "1", "--duration", "1", "--warmup", "0", key="wrong")
    assert "| 4401: 1 |" in refused.stdout  # refused for its key, the table says why, and no retry storm


def test_bench_live_speaks_elevenlabs_protocol_too(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "elevenlabs.json"
    done = bench(
        server, "--live", "--protocol", "elevenlabs", "--concurrency", "2", "--duration", "3", "--warmup", "0",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = json.loads(out.read_text())["rows"]
    assert row["protocol"] == "elevenlabs"
    assert row["errors"] == 0, row
    assert row["requests"] >= 2
    assert row["throughput_audio_s_per_s"] > 0
    assert row["ttfa_p50_ms"] > 0
    refused = bench(server, "--live", "--protocol", "elevenlabs", "--concurrency", "1", "--duration", "1",
                    "--warmup", "0", key="wrong")  # fmt: skip
    assert "| 1008: 1 |" in refused.stdout  # ElevenLabs' close code for a refused key


async def test_a_refused_key_reaches_a_client_that_is_still_sending(server: Server) -> None:
    """Through granian: the refusal's close frame arrives even while the client's first messages are on
    their way (closing with them unread reset the connection: 1006 in 26 of 30 tries before)."""
    import asyncio
    import contextlib

    import websockets

    base = server.url.replace("http://", "ws://")
    routes = {
        "/v1/audio/speech/stream-input": ({"type": "speak", "text": "abcd"}, 4401),
        "/v1/text-to-speech/v/stream-input?output_format=pcm_24000": ({"text": "abcd"}, 1008),
    }
    for route, (message, expected) in routes.items():
        codes = []
        for _ in range(10):
            headers = {"X-API-Key": "wrong", "xi-api-key": "wrong"}
            async with websockets.connect(base + route, additional_headers=headers) as ws:
                for _ in range(6):
                    await ws.send(json.dumps(message))
                with contextlib.suppress(websockets.exceptions.ConnectionClosedError):
                    async for _ in ws:
                        pass
                codes.append(ws.close_code)
            await asyncio.sleep(0)
        assert codes == [expected] * 10, route
