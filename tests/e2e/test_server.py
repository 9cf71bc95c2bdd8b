"""The real server (``chorus serve`` under granian) on a free port, driven over HTTP and with curl."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.server import Server, free_port, http_status, post, running_server, wait_for_status

pytestmark = pytest.mark.slow

KEY = "e2e-secret-key"
CURL = shutil.which("curl")


def samples(wav_bytes: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def server(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "CHORUS_MAX_BATCH_WAIT_MS": "300", "CHORUS_MAX_BATCH_SIZE": "8"}
    with running_server(tmp_path_factory.mktemp("e2e"), env) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    health_port = free_port()
    env = {
        "CHORUS_MODEL": str(tiny_vits_dir),
        "API_KEY": f"{KEY},second-key",
        "PORT_HEALTH": str(health_port),
        "HEALTH_CHECK_PATH": "/healthz",  # RunPod's setting: its balancer then polls this path
    }
    with running_server(tmp_path_factory.mktemp("e2e-keyed"), env) as running:
        running.health_port = health_port  # type: ignore[attr-defined]
        yield running


# ---------------------------------------------------------------------------------------------- the seed's curl


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_the_seed_curl_commands_work_verbatim(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "audio.wav"
    commands = [
        f"curl -s {server.url}/ping",
        f'curl -s -X POST {server.url}/generate -H "Content-Type: application/json" '
        f'-H "Authorization: Bearer YOUR_RUNPOD_API_KEY" -d \'{{"text": "Hello world!"}}\' --output {out}',
    ]
    ping = subprocess.run(commands[0], shell=True, capture_output=True, check=True, timeout=30)
    assert json.loads(ping.stdout) == {"status": "ok"}
    subprocess.run(commands[1], shell=True, check=True, timeout=60)
    assert len(samples(out.read_bytes())) > 0
    out.unlink()
    full = (
        f'curl -s -X POST {server.url}/generate -H "Content-Type: application/json" '
        f'-d \'{{"text": "Hello world!", "language": "en", "temperature": 0.7}}\' --output {out}'
    )
    subprocess.run(full, shell=True, check=True, timeout=60)
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)


# ---------------------------------------------------------------------------------------------- batching


def test_concurrent_requests_are_batched_and_each_gets_its_own_audio(server: Server) -> None:
    texts = [
        "hi",
        "hello there",
        "the quick brown fox",
        "jumps over the lazy dog",
        "a much longer sentence that takes a while to say out loud",
        "short one",
        "numbers are not letters",
        "the last of eight distinct texts",
    ]
    barrier = threading.Barrier(len(texts))

    def call(text: str) -> tuple[int, dict[str, str], bytes]:
        barrier.wait()
        return post(server, {"text": text, "temperature": 0})

    with ThreadPoolExecutor(len(texts)) as pool:
        together = list(pool.map(call, texts))
    assert all(status == 200 for status, _, _ in together)
    assert max(int(headers["x-batch-size"]) for _, headers, _ in together) > 1
    for text, (_, _, body) in zip(texts, together, strict=True):
        status, headers, alone = post(server, {"text": text, "temperature": 0})
        assert status == 200
        assert headers["x-batch-size"] == "1"
        a, b = samples(alone), samples(body)
        assert len(a) == len(b), text
        assert int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) <= 33  # 1e-3 of full scale


def test_seeded_noisy_requests_are_the_same_batched_or_alone(server: Server) -> None:
    bodies = [{"text": f"seeded request number {i}", "seed": 1000 + i, "temperature": 1.0} for i in range(4)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: post(server, b), bodies))
    assert max(int(h["x-batch-size"]) for _, h, _ in together) > 1
    for body, (_, _, audio) in zip(bodies, together, strict=True):
        _, _, alone = post(server, body)
        assert len(samples(alone)) == len(samples(audio))
        assert int(np.abs(samples(alone).astype(np.int32) - samples(audio)).max()) <= 33


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"this is not json", 400),
        ({"text": ""}, 422),
        ({"text": "hi", "temperature": 9}, 400),
        ({"text": "hi", "language": "xx"}, 422),
        ({"text": "🙂"}, 422),
        ({"text": "x" * 5001}, 422),
    ],
)
def test_bad_input_over_http_gets_a_json_4xx(server: Server, body: Any, status: int) -> None:
    got, headers, payload = post(server, body)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    assert json.loads(payload)["detail"]


def test_a_body_over_1_mib_is_refused_with_413_before_it_is_read(server: Server) -> None:
    import socket

    # Declare 1.1 MB but send only the start: the server answers from the headers, so the client never
    # hits a broken pipe pushing the rest (which makes a plain client's test flaky).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1100000\r\n\r\n" + b'{"text": "' + b"a" * 1000
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            part = sock.recv(65536)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 413")


# ---------------------------------------------------------------------------------------------- auth and ports


def test_auth_rules_over_http(keyed_server: Server) -> None:
    assert http_status(keyed_server.url + "/ping") == 200
    assert post(keyed_server, {"text": "hi"})[0] == 401
    assert post(keyed_server, {"text": "hi"}, {"X-API-Key": "nope"})[0] == 401
    assert post(keyed_server, {"text": "hi"}, {"Authorization": f"Bearer {KEY}"})[0] == 401
    assert post(keyed_server, {"text": "hi"}, {"X-API-Key": KEY})[0] == 200
    assert post(keyed_server, {"text": "hi"}, {"X-API-Key": "second-key"})[0] == 200
    assert KEY not in keyed_server.log()


def test_ping_answers_on_the_health_port_too(keyed_server: Server) -> None:
    for port in (keyed_server.port, keyed_server.health_port):  # type: ignore[attr-defined]
        for path in ("/ping", "/healthz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                assert response.status == 200
                assert json.loads(response.read()) == {"status": "ok"}
    assert http_status(f"http://127.0.0.1:{keyed_server.health_port}/other") == 404  # type: ignore[attr-defined]


def test_head_on_the_health_check_keeps_the_connection_usable(keyed_server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", keyed_server.port, timeout=10)
    try:
        for path in ("/ping", "/healthz"):
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert (head.status, head.read()) == (200, b"")
            assert head.getheader("content-length") == "15"
            connection.request("GET", path)  # the same connection: HEAD's Content-Length announced no body
            got = connection.getresponse()
            assert (got.status, got.read()) == (200, b'{"status":"ok"}')
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------- lifecycle


def test_a_broken_model_reports_503_and_never_200(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "vits", "hidden_size": "not a number"}')
    with running_server(tmp_path, {"CHORUS_MODEL": str(broken)}, wait_ready=False) as server:
        assert wait_for_status(server, {200, 503}) == 503


def test_a_malformed_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    from tests.e2e.server import chorus_executable

    result = subprocess.run(
        [chorus_executable(), "serve"],
        env={"PATH": "/usr/bin:/bin", "CHORUS_MAX_QUEUE": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CHORUS_MAX_QUEUE" in result.stderr


def test_serve_flags_win_over_the_environment_and_help_lists_every_setting(tiny_vits_dir: Path, tmp_path: Path) -> None:
    from service.settings import ENV_NAMES
    from tests.e2e.server import chorus_executable

    # CHORUS_MODEL names a folder that does not exist; --model names the tiny checkpoint and wins.
    env = {"CHORUS_MODEL": str(tmp_path / "no-such-model")}
    flags = ("--model", str(tiny_vits_dir), "--device", "cpu")
    with running_server(tmp_path, env, serve_args=flags) as server:
        response = urllib.request.urlopen(server.url + "/v1/models", timeout=10)
        with response:
            models = json.load(response)
    assert models["data"][0]["id"] == tiny_vits_dir.name
    shown = subprocess.run([chorus_executable(), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert all(f"  {name} " in shown.stdout for name in ENV_NAMES), shown.stdout


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_vits_dir: Path, tmp_path: Path) -> None:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "CHORUS_MAX_BATCH_WAIT_MS": "500"}
    with running_server(tmp_path, env) as server:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(post, server, {"text": f"in flight {i}"}) for i in range(4)]
            threading.Event().wait(0.2)  # the requests are queued, waiting for their batch
            server.process.send_signal(signal.SIGTERM)
            results = [f.result(timeout=60) for f in futures]
        assert [status for status, _, _ in results] == [200] * 4
        assert all(len(samples(body)) > 0 for _, _, body in results)
        assert server.process.wait(timeout=60) == 0


def test_overload_is_refused_early_with_429_and_retry_after(tiny_vits_dir: Path, tmp_path: Path) -> None:
    timeout_s = 5.0
    env = {
        "CHORUS_MODEL": str(tiny_vits_dir),
        "CHORUS_MAX_QUEUE": "1",
        "CHORUS_MAX_BATCH_SIZE": "1",
        "CHORUS_REQUEST_TIMEOUT_S": str(timeout_s),
    }
    long_text = "the quick brown fox jumps over the lazy dog " * 100
    with running_server(tmp_path, env) as server, ThreadPoolExecutor(24) as pool:
        barrier = threading.Barrier(24)

        def call(i: int) -> tuple[int, dict[str, str], bytes, float]:
            barrier.wait()
            started = time.monotonic()
            status, headers, body = post(server, {"text": long_text + str(i)})
            return status, headers, body, time.monotonic() - started

        timed = list(pool.map(call, range(24)))
    results = [(status, headers, body) for status, headers, body, _ in timed]
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429, 503, 504}
    assert 200 in statuses
    # Nobody waits past the deadline (plus the one batch that may be running when it passes).
    assert max(elapsed for *_, elapsed in timed) < timeout_s + 10
    refused = [(headers, body) for status, headers, body in results if status == 429]
    assert refused, "24 simultaneous long requests against a queue of one were all admitted"
    for headers, body in refused:
        assert int(headers["retry-after"]) >= 1
        assert "queue is full" in json.loads(body)["detail"]


def test_a_queue_wait_bound_refuses_early_naming_the_wait(tiny_vits_dir: Path, tmp_path: Path) -> None:
    # A queue of 256 jobs would admit all 24 requests; a 1 ms bound on the first sentence's wait does not.
    env = {
        "CHORUS_MODEL": str(tiny_vits_dir),
        "CHORUS_MAX_QUEUE": "256",
        "CHORUS_MAX_BATCH_SIZE": "1",
        "CHORUS_MAX_QUEUE_WAIT_S": "0.001",
    }
    long_text = "the quick brown fox jumps over the lazy dog " * 30
    with running_server(tmp_path, env) as server, ThreadPoolExecutor(24) as pool:
        assert post(server, {"text": "Time one batch first."})[0] == 200  # no estimate before a batch is timed
        barrier = threading.Barrier(24)

        def call(i: int) -> tuple[int, dict[str, str], bytes]:
            barrier.wait()
            return post(server, {"text": long_text + str(i)})

        results = list(pool.map(call, range(24)))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses
    refused = [(headers, body) for status, headers, body in results if status == 429]
    assert refused, "24 simultaneous requests were all admitted despite the wait bound"
    for headers, body in refused:
        assert int(headers["retry-after"]) >= 1
        assert "over the 0.001 s bound" in json.loads(body)["detail"]


def test_sigterm_turns_the_health_port_to_503_while_accepted_requests_finish(
    tiny_vits_dir: Path, tmp_path: Path
) -> None:
    health_port = free_port()
    env = {
        "CHORUS_MODEL": str(tiny_vits_dir),
        "CHORUS_MAX_BATCH_WAIT_MS": "3000",  # accepted requests wait for a fuller batch: the drain takes time
        "PORT_HEALTH": str(health_port),
    }
    with running_server(tmp_path, env) as server, ThreadPoolExecutor(2) as pool:
        accepted = [pool.submit(post, server, {"text": f"accepted before the signal {i}"}) for i in range(2)]
        threading.Event().wait(0.5)
        server.process.send_signal(signal.SIGTERM)
        threading.Event().wait(0.5)
        assert http_status(f"http://127.0.0.1:{health_port}/ping") == 503  # RunPod stops routing here
        results = [f.result(timeout=60) for f in accepted]
        assert [status for status, _, _ in results] == [200, 200]
        assert server.process.wait(timeout=60) == 0


def test_several_processes_serve_one_port_and_are_ready_together(tiny_vits_dir: Path, tmp_path: Path) -> None:
    health_port = free_port()
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "CHORUS_PROCESSES": "2", "PORT_HEALTH": str(health_port)}
    with running_server(tmp_path, env) as server:
        marks = Path(tempfile.gettempdir()) / f"chorus-ready-{server.process.pid}"
        assert sorted(p.name.isdigit() for p in marks.iterdir()) == [True, True]  # /ping said 200: both are ready
        assert http_status(f"http://127.0.0.1:{health_port}/ping") == 200  # both processes bind the health port
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: post(server, {"text": f"process check {i}"}), range(16)))
        assert [status for status, _, _ in results] == [200] * 16
        assert all(len(samples(body)) > 0 for _, _, body in results)
        with urllib.request.urlopen(server.url + "/stats", timeout=10) as response:
            stats = json.loads(response.read())
        assert stats["processes"] == 2
        assert stats["pid"] in {int(p.name) for p in marks.iterdir()}
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert not marks.exists()


def _descendants(pid: int) -> set[int]:
    """Processes below ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _still_running(pids: set[int], wait_s: float = 15.0) -> set[int]:
    """Those of ``pids`` still running after up to ``wait_s`` (multiprocessing's resource tracker, for one,
    exits a moment after the process that started it)."""
    deadline = time.monotonic() + wait_s
    while (running := {pid for pid in pids if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return running


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (an exited child not yet reaped is a zombie, state Z)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_the_model_can_run_in_a_process_of_its_own(tiny_vits_dir: Path, tmp_path: Path) -> None:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "CHORUS_MODEL_PROCESS": "1"}
    with running_server(tmp_path, env) as server:
        # granian's supervisor, its worker (the app and its batcher), and the worker's spawned model process
        spawned = [pid for pid in _descendants(server.process.pid) if b"spawn_main" in _cmdline(pid)]
        assert spawned
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: post(server, {"text": f"model process {i}"}), range(12)))
        assert [status for status, _, _ in results] == [200] * 12
        assert all(len(samples(body)) > 0 for _, _, body in results)
        below = _descendants(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert not _still_running(below)  # the model process went too


def test_processes_share_one_model_process(tiny_vits_dir: Path, tmp_path: Path) -> None:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "CHORUS_MODEL_PROCESS": "1", "CHORUS_PROCESSES": "2"}
    earlier = set(Path(tempfile.gettempdir()).glob("chorus-models-*"))  # left by other runs, if any
    with running_server(tmp_path, env) as server:
        below = _descendants(server.process.pid)
        # The supervisor started one model process (its direct child); neither worker started its own.
        spawned = [pid for pid in below if b"spawn_main" in _cmdline(pid)]
        assert len(spawned) == 1
        assert _parent(spawned[0]) == server.process.pid
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: post(server, {"text": f"shared model {i}"}), range(16)))
        assert [status for status, _, _ in results] == [200] * 16
        assert all(len(samples(body)) > 0 for _, _, body in results)
        folders = set(Path(tempfile.gettempdir()).glob("chorus-models-*")) - earlier
        assert len(folders) == 1  # the model process's socket folder
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert not _still_running(below)  # the model process went too
    assert not [folder for folder in folders if folder.exists()]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
