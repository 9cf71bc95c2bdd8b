"""The Containerfile's own install and start commands, run in a fresh virtual environment.

No container engine runs on these machines, so the image is never built here. What can run, does: every
``RUN`` step that installs Python packages, converts the voice or fetches weights, read from the
Containerfile itself (so the test follows the file), with its ``ARG``/``ENV`` values and ``/opt`` paths
moved into a temporary folder; then its ``CMD`` and its ``HEALTHCHECK``. Only the system steps (apt-get,
useradd) are skipped: they need root on an Ubuntu image.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.e2e.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_STEPS = ("apt-get", "useradd")
# pip settings that would install somewhere other than the venv being built.
PIP_ELSEWHERE = {"PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def builders_pip() -> dict[str, str]:
    """Where the builder's pip finds packages (its user config file, cache), kept when HOME moves.

    A build machine's pip settings say where wheels come from (a local wheel folder, a mirror); they are
    the builder's, not the image's, and losing them here sent pip to PyPI for a CUDA torch.
    """
    found: dict[str, str] = {}
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path(config) / "pip" / "pip.conf", Path.home() / ".pip" / "pip.conf"):
        if "PIP_CONFIG_FILE" not in os.environ and candidate.is_file():
            found["PIP_CONFIG_FILE"] = str(candidate)
            break
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    if cache.returncode == 0 and cache.stdout.strip():
        found["PIP_CACHE_DIR"] = cache.stdout.strip()
    return found


def assignments(arguments: str) -> dict[str, str]:
    return {name: value for name, _, value in (part.partition("=") for part in shlex.split(arguments))}


def test_the_containerfile_installs_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    steps = instructions((ROOT / "Containerfile").read_text())
    moved = {
        "/opt/venv": str(tmp_path / "venv"),
        "/opt/chorus": str(tmp_path / "chorus"),
        "/tmp/requirements.txt": str(tmp_path / "requirements.txt"),
    }

    def here(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    subprocess.run([sys.executable, "-m", "venv", moved["/opt/venv"]], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_") and k not in {*PIP_ELSEWHERE, "API_KEY"}}
    env.update(builders_pip(), HF_HUB_OFFLINE="1", HOME=str(tmp_path))
    workdir = tmp_path
    ran: list[str] = []
    cmd: list[str] = []
    healthcheck: list[str] = []
    for keyword, arguments in steps:
        if keyword in ("ARG", "ENV"):
            values = {k: here(v).replace("$PATH", env["PATH"]) for k, v in assignments(arguments).items()}
            # The image keeps no pip cache (a size setting); here the cache spares CI the downloads.
            values.pop("PIP_NO_CACHE_DIR", None)
            if keyword == "ARG" and "TORCH_SPEC" in values:
                # What a builder passes as --build-arg: the torch build these tests run on, so a CPU machine
                # installs its CPU wheel, not the multi-GB CUDA build (which once filled CI's disk).
                values["TORCH_SPEC"] = f"torch=={torch.__version__}"
            env.update(values)
        elif keyword == "WORKDIR":
            workdir = Path(here(arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            for source in sources:
                target = workdir / destination / (source if destination.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, workdir / destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, target)
        elif keyword == "RUN":
            if any(step in arguments for step in SYSTEM_STEPS):
                continue
            # Never let a step install into the Python running the tests.
            assert str(shutil.which("pip", path=env["PATH"])).startswith(moved["/opt/venv"]), env["PATH"]
            done = subprocess.run(
                ["bash", "-c", here(arguments)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(arguments)
        elif keyword == "CMD":
            cmd = json.loads(arguments)
        elif keyword == "HEALTHCHECK":
            healthcheck = json.loads(arguments.split(" CMD ", 1)[1])
    assert len(ran) >= 4  # torch, the requirements, the project, the weights
    assert cmd == ["chorus", "serve"]
    assert Path(env["CHORUS_MODEL"], "config.json").exists()  # the voice was converted at "build" time

    # Nothing from the development checkout may leak in: the venv has its own, non-editable install.
    where = subprocess.run(
        ["python", "-c", "import service; print(service.__file__)"], env=env, capture_output=True, text=True, cwd="/"
    )
    assert where.stdout.strip().startswith(moved["/opt/venv"]), where
    installed = subprocess.run(
        ["python", "-c", "import torch; print(torch.__version__)"], env=env, capture_output=True, text=True, cwd="/"
    )
    assert installed.stdout.strip() == torch.__version__, installed  # the build arg was honoured

    port = free_port()
    env.update({"PORT": str(port), "CHORUS_HOST": "127.0.0.1"})
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while subprocess.run(healthcheck, env=env, capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"the HEALTHCHECK never passed:\n{log_path.read_text()}"
            time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/generate",
            data=b'{"text": "The container works."}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Content-Type"] == "audio/wav"
            assert len(response.read()) > 10_000
        # The playground's files ship inside the package (package data), not beside the checkout.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/playground/static/playground.js", timeout=10) as page:
            assert b"Chorus playground" in page.read()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log_path.read_text()

    # Queue mode from the same image: the runpod SDK is installed and its local test mode runs a job.
    job = json.dumps({"input": {"text": "Queue mode in the image."}})
    worker = subprocess.run(
        ["chorus", "runpod-worker", "--test_input", job], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    assert "completed successfully" in worker.stdout + worker.stderr
