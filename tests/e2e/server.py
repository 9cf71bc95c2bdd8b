"""Start the real ``chorus serve`` (granian) on free ports and talk HTTP to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chorus_executable() -> str:
    candidate = Path(sys.executable).with_name("chorus")
    if not candidate.exists():
        raise RuntimeError("the chorus console script is not installed beside this Python (run make install)")
    return str(candidate)


def chorus_command() -> list[str]:
    """The console script when installed, else the same entry point through ``python -m``."""
    candidate = Path(sys.executable).with_name("chorus")
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", "service.cli"]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def http_status(url: str, timeout_s: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for_status(server: Server, wanted: set[int], timeout_s: float = 180.0, path: str = "/ping") -> int:
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            last = http_status(server.url + path, timeout_s=2)
            if last in wanted:
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"/ping never answered {wanted} (last {last}):\n{server.log()}")


@contextmanager
def running_server(
    tmp_path: Path, env: dict[str, str], *, wait_ready: bool = True, serve_args: tuple[str, ...] = ()
) -> Iterator[Server]:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_") and k not in ("API_KEY", "PORT")}
    full_env.update({"PORT": str(port), "CHORUS_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1", **env})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*chorus_command(), "serve", *serve_args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process=process, port=port, log_path=log_path)
    try:
        if wait_ready:
            wait_for_status(server, {200})
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def post(
    server: Server,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
    path: str = "/generate",
    timeout_s: float = 120.0,
) -> tuple[int, dict[str, str], bytes]:
    """POST JSON (or raw bytes) and return (status, lower-cased headers, body), error statuses included."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
