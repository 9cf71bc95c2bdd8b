"""CUDA check of the VITS backend and the HTTP service: exactness, throughput, memory.

Run through ``benchmarks/gpu_check.sh`` on a GPU machine. Prints, for the embedded Piper voice:
  * the largest difference between rows synthesized alone and inside a mixed-length batch (fp32);
  * raw backend audio-seconds per wall-second and peak memory at several batch sizes and precisions,
    batches drawn at random from the sentence set (as callers arrive), each batch timed to completion;
  * ``chorus serve`` on CUDA over HTTP at several concurrencies (closed loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.bench.loadgen import Target, closed_loop, summarize
from service.bench.report import machine
from service.bench.sentences import SENTENCES


def load(model: str, dtype: str, device: str) -> Any:
    from inference.backends import ModelSpec, load_backend

    backend = load_backend(ModelSpec(model=model, device=device, dtype=dtype))
    backend.warmup()
    return backend


def exactness(backend: Any) -> float:
    import numpy as np

    from inference.backends.base import SynthesisParams

    texts = ["Yes.", SENTENCES[14], SENTENCES[7], "Okay then."]
    jobs = [backend.prepare(t, SynthesisParams(temperature=0.0))[0] for t in texts]
    alone = [backend.synthesize([job])[0] for job in jobs]
    batched = backend.synthesize(jobs)
    worst = 0.0
    for a, b in zip(alone, batched, strict=True):
        if len(a) != len(b):
            return float("inf")
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def throughput(backend: Any, batch_size: int, min_s: float) -> dict[str, Any]:
    import torch

    from inference.backends.base import SynthesisParams

    pool = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    rng = random.Random(batch_size)
    rate = backend.info.sample_rate_hz
    backend.synthesize(rng.choices(pool, k=batch_size))  # allocator and kernels warm for this size
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    samples, batches = 0, 0
    t0 = time.perf_counter()
    while batches < 3 or time.perf_counter() - t0 < min_s:
        batch = rng.choices(pool, k=batch_size)
        samples += sum(len(w) for w in backend.synthesize(batch))  # returns host arrays: fully synchronised
        batches += 1
    wall = time.perf_counter() - t0
    return {
        "batch_size": batch_size,
        "batches": batches,
        "audio_s": samples / rate,
        "wall_s": wall,
        "audio_s_per_s": samples / rate / wall,
        "ms_per_batch": wall / batches * 1000,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
    }


def profile(backend: Any, batch_size: int) -> None:
    """Where one batch's time goes: top kernels by GPU time, CPU-side total, launches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from inference.backends.base import SynthesisParams

    pool = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    batch = random.Random(7).choices(pool, k=batch_size)
    backend.synthesize(batch)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        backend.synthesize(batch)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key == "cudaMemcpyAsync")
    print(f"profile batch {batch_size}: wall {wall * 1000:.1f} ms, GPU busy {gpu_us / 1000:.1f} ms, "
          f"{launches} kernel launches, {syncs} sync/memcpy calls", flush=True)  # fmt: skip
    print(events.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / ".gpu" / "voice"))
    parser.add_argument("--batch-sizes", default="1,8,32,64,128")
    parser.add_argument("--dtypes", default="fp32,bf16,fp16")
    parser.add_argument("--concurrency", default="1,8,32,64,128")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--http-seconds", type=float, default=8.0, help="closed-loop seconds per concurrency")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="cpu only for a dry run of the script")
    parser.add_argument("--profile-batch", type=int, default=0, help="profile one batch of this size")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    parser.add_argument(
        "--http-variant",
        action="append",
        default=[],
        help="extra server settings for another HTTP sweep, e.g. CHORUS_SWITCH_INTERVAL_MS=0.5 (repeatable)",
    )
    args = parser.parse_args()
    import torch

    report: dict[str, Any] = {"machine": machine(), "model": args.model, "raw": [], "http": []}
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        report["cudnn_benchmark"] = True
    print(f"machine: {report['machine']}", flush=True)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    fp32 = load(args.model, "fp32", args.device)
    report["max_abs_diff_batched_vs_alone_fp32"] = exactness(fp32)
    print(f"fp32 batched vs alone, max abs diff: {report['max_abs_diff_batched_vs_alone_fp32']:.2e}", flush=True)
    del fp32

    for dtype in args.dtypes.split(","):
        backend = load(args.model, dtype, args.device)
        if dtype != "fp32":
            diff = exactness(backend)
            report[f"max_abs_diff_batched_vs_alone_{dtype}"] = diff
            print(f"{dtype} batched vs alone, max abs diff: {diff:.2e}", flush=True)
        for size in batch_sizes:
            row = {"dtype": dtype, **throughput(backend, size, args.min_seconds)}
            report["raw"].append(row)
            print(
                f"raw {dtype:>4} batch {size:>4}: {row['audio_s_per_s']:9.1f} audio-s/s, "
                f"{row['ms_per_batch']:7.1f} ms/batch, peak {row['peak_gib']:.2f} GiB",
                flush=True,
            )
        if args.profile_batch and dtype == args.dtypes.split(",")[-1]:
            profile(backend, args.profile_batch)
        del backend
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    best = max(report["raw"], key=lambda r: r["audio_s_per_s"])
    from tests.e2e.server import running_server

    base_env = {
        "CHORUS_MODEL": args.model,
        "CHORUS_DEVICE": args.device,
        "CHORUS_DTYPE": best["dtype"],
        "CHORUS_MAX_BATCH_SIZE": str(max(batch_sizes)),
        "CHORUS_MAX_QUEUE": "4096",
        "CHORUS_LOG_LEVEL": "WARNING",
    }
    for variant in ["", *args.http_variant]:
        env = dict(base_env)
        env.update(dict(kv.split("=", 1) for kv in variant.split(",") if kv))
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), env) as server:
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                target = Target(url=server.url)
                asyncio.run(closed_loop(target, concurrency, duration_s=2.0, quiet=True))  # warm-up
                outcomes, wall = asyncio.run(
                    closed_loop(target, concurrency, duration_s=args.http_seconds, first_index=1000, quiet=True)
                )
                result = summarize("chorus", outcomes, wall, concurrency=concurrency)
                row = {"dtype": best["dtype"], "variant": variant, **result}
                row["audio_s_per_s"] = result["throughput_audio_s_per_s"]
                report["http"].append(row)
                sizes = result["batch_sizes"]
                mean_batch = sum(int(k) * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
                print(
                    f"http {best['dtype']} {variant or 'default'} c={concurrency:>4}: "
                    f"{row['audio_s_per_s']:9.1f} audio-s/s, p50 {result['p50_ms']} ms, "
                    f"mean batch {mean_batch:.1f}, errors {result['errors']}",
                    flush=True,
                )
    best_http = max(report["http"], key=lambda r: r["audio_s_per_s"])
    print(f"\nbest raw: {best['audio_s_per_s']:.1f} audio-s/s ({best['dtype']}, batch {best['batch_size']})")
    print(f"best HTTP: {best_http['audio_s_per_s']:.1f} audio-s/s (c={best_http['concurrency']})")
    print(f"HTTP / raw: {best_http['audio_s_per_s'] / best['audio_s_per_s']:.3f}")
    out = args.json or (Path(os.environ["OUT"]) / "gpu_bench.json" if "OUT" in os.environ else None)
    if out:
        out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
