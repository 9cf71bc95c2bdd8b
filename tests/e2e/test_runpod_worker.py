"""``chorus runpod-worker`` under the real runpod SDK: its --test_input mode and its local API server."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import time
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import chorus_command, free_port

pytestmark = pytest.mark.slow

TEXT = "Queue mode works. Its jobs batch together."


def worker_env(model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "RUNPOD_")) and k != "API_KEY"}
    env.update({"CHORUS_MODEL": str(model_dir), "HF_HUB_OFFLINE": "1"})
    return env


def run_test_input(model_dir: Path, tmp_path: Path, job: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # The SDK reads test_input.json from the working directory when no flag is given: run elsewhere.
    return subprocess.run(
        [*chorus_command(), "runpod-worker", "--test_input", json.dumps(job)],
        env=worker_env(model_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_sdks_test_input_mode_runs_a_job(tiny_vits_dir: Path, tmp_path: Path) -> None:
    done = run_test_input(tiny_vits_dir, tmp_path, {"input": {"text": TEXT, "stream": True, "seed": 3}})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Job local_test completed successfully." in log
    assert "'done': True" in log
    assert "'seed': 3" in log


def test_the_sdks_test_input_mode_fails_a_bad_job(tiny_vits_dir: Path, tmp_path: Path) -> None:
    done = run_test_input(tiny_vits_dir, tmp_path, {"input": {"text": "Hi", "speed": 10}})
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    assert "input.speed" in log


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_the_sdks_local_api_streams_and_batches_concurrent_jobs(tiny_vits_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*chorus_command(), "runpod-worker", "--rp_serve_api", "--rp_api_port", str(port)],
            env=worker_env(tiny_vits_dir),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                urllib.request.urlopen(base + "/docs", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        # A streamed job through the SDK's generator path: the items concatenate into one WAV.
        result = post(base + "/runsync", {"input": {"text": TEXT, "stream": True, "seed": 9}})
        assert result["status"] == "COMPLETED", result
        *chunks, summary = result["output"]
        assert summary["done"] is True
        assert summary["chunks"] == len(chunks) >= 2  # one item per sentence at least
        audio = b"".join(base64.b64decode(c["audio"]) for c in chunks)
        with wave.open(io.BytesIO(audio)) as wav:
            rate = wav.getframerate()
        samples = (len(audio) - 44) // 2
        assert abs(samples / rate - summary["duration_s"]) < 0.001
        # Concurrent jobs reach the same batcher and run together.
        with ThreadPoolExecutor(8) as pool:
            outputs = list(pool.map(lambda i: post(base + "/runsync", {"input": {"text": f"Job {i} here."}}), range(8)))
        assert all(o["status"] == "COMPLETED" and "audio" in o["output"][0] for o in outputs)
        assert max(o["output"][0]["batch_size"] for o in outputs) > 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
