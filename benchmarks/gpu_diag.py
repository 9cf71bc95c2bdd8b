"""Diagnose slow batch shapes on CUDA: time and peak memory per stage, by batch size, and the top kernels.

    python benchmarks/gpu_diag.py [--dtype bf16] [--sizes 31,32,33,64,128] [--profile 32]
    python benchmarks/gpu_diag.py --caps none,1024,4096 [--best-to FILE] [...]
    python benchmarks/gpu_diag.py --layouts [--dtype bf16] [--sizes 1,8,32,64]

Stages (each timed between device synchronisations, so the total is slower than a real batch): the text
encoder, the duration predictor, the flow and the vocoder (with the copy to the host). ``--profile N`` lists
the CUDA kernels that took the most time in a batch of N rows. The cuDNN workspace cap in force (PyTorch's
``CUDNN_CONV_WSCAP_DBG``, MiB) is printed. ``--caps`` runs the whole measurement once per cap, each in a
process of its own (PyTorch reads the cap once), and prints each cap's summed time over the sizes; ``--best-
to`` writes the fastest cap's value to a file (``none``: uncapped) for a later run to use. ``--layouts``
times the flow and vocoder as 1-D convolutions (the CUDA default) against the CPU path's channels-last 2-D
ones, interleaved in one process, with the largest sample difference between them at temperature 0: in bf16
cuDNN runs NHWC kernels and transposes around each 1-D convolution (16 % of a 32-row batch's GPU time on the
H200, 2026-11-28). On an H200 on 2026-11-28 the 32-row batch that had peaked at 75.7 GiB on 2026-11-27 ran
at 54 ms in 2.3 GiB uncapped, and no cap was faster (benchmarks/results/gpu-h200-diag-2026-11-28.log).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--sizes", default="31,32,33,64,128")
    parser.add_argument("--profile", type=int, default=0, help="list the top kernels of a batch of this many rows")
    parser.add_argument("--model", default=str(ROOT / ".gpu" / "voice"))
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script where there is no GPU")
    parser.add_argument("--caps", default="", help="comma-separated cuDNN workspace caps in MiB; none: uncapped")
    parser.add_argument("--best-to", type=Path, default=None, help="with --caps: write the fastest cap here")
    parser.add_argument("--layouts", action="store_true", help="1-D against channels-last 2-D convolutions")
    parser.add_argument("--graphs", action="store_true", help="eager against CHORUS_CUDA_GRAPHS, batch by batch")
    args = parser.parse_args()
    if args.caps:
        compare_caps(args)
        return
    if args.layouts:
        compare_layouts(args)
        return
    if args.graphs:
        compare_graphs(args)
        return

    import torch

    import inference.backends.vits as vits
    from inference.backends import ModelSpec, load_backend
    from inference.backends.base import SynthesisParams
    from service.bench.sentences import SENTENCES

    backend: Any = load_backend(ModelSpec(model=args.model, device=args.device, dtype=args.dtype))
    cuda = backend.device.type == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_gib() -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0

    backend.warmup()
    print(f"dtype {args.dtype}, CUDNN_CONV_WSCAP_DBG={os.environ.get('CUDNN_CONV_WSCAP_DBG', '(unset)')}")
    stages: dict[str, float] = defaultdict(float)
    peaks: dict[str, float] = defaultdict(float)

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            synchronize()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = function(*a, **k)
            synchronize()
            stages[name] += time.perf_counter() - start
            peaks[name] = max(peaks[name], peak_gib())
            return out

        return wrapper

    backend._text.encode = timed("text", backend._text.encode)
    backend._text.log_durations = timed("durations", backend._text.log_durations)
    vits.flow_reverse = timed("flow", vits.flow_reverse)
    backend._decode = timed("vocoder", backend._decode)

    pool = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    for size in [int(s) for s in args.sizes.split(",")]:
        batch = random.Random(size).choices(pool, k=size)
        backend.synthesize(batch)  # first run of this shape: cuDNN picks its algorithms
        stages.clear()
        peaks.clear()
        synchronize()
        start = time.perf_counter()
        runs = 2
        for _ in range(runs):
            backend.synthesize(batch)
        total = (time.perf_counter() - start) / runs
        parts = ", ".join(f"{k} {1000 * v / runs:.1f} ms / {peaks[k]:.2f} GiB" for k, v in stages.items())
        print(f"batch {size:4d}: {1000 * total:7.1f} ms  ({parts})", flush=True)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch = random.Random(args.profile).choices(pool, k=args.profile)
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            backend.synthesize(batch)
        print(f"top kernels, batch {args.profile}:")
        key = "cuda_time_total" if cuda else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=8, max_name_column_width=90))


def compare_caps(args: argparse.Namespace) -> None:
    """The measurement once per cuDNN workspace cap, each in a fresh process; the fastest cap by summed time."""
    totals: dict[str, float] = {}
    for cap in args.caps.split(","):
        env = {**os.environ, "CUDNN_CONV_WSCAP_DBG": "100000000" if cap == "none" else cap}
        command = [sys.executable, __file__, "--dtype", args.dtype, "--sizes", args.sizes, "--model", args.model]
        command += ["--device", args.device, "--profile", str(args.profile if cap == "none" else 0)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        print(f"--- cap {cap} MiB" if cap != "none" else "--- uncapped", flush=True)
        print(done.stdout + done.stderr[-3000:], flush=True)
        times = [float(t) for t in re.findall(r"^batch +\d+: +([\d.]+) ms", done.stdout, flags=re.MULTILINE)]
        if done.returncode == 0 and times:
            totals[cap] = sum(times)
    if not totals:
        print("no cap ran through")
        return
    best = min(totals, key=lambda cap: totals[cap])
    print("summed ms over the sizes: " + ", ".join(f"{cap} {total:.0f}" for cap, total in totals.items()))
    print(f"fastest: {best}")
    if args.best_to:
        args.best_to.write_text("100000000" if best == "none" else best)


def compare_layouts(args: argparse.Namespace) -> None:
    """Two backends of the same checkpoint, one with the flow and vocoder as channels-last 2-D convolutions,
    timed batch size by batch size in alternation, and their outputs compared at temperature 0."""
    from inference.backends import ModelSpec, load_backend

    def load(channels_last: bool) -> Any:
        backend: Any = load_backend(ModelSpec(model=args.model, device=args.device, dtype=args.dtype))
        if channels_last and not backend._channels_last:
            backend._cpu_channels_last()
        backend.batch_decoder = True  # the GPU's batched flow and vocoder, on CPU too for a dry run
        backend.warmup()
        return backend

    backends = {"1-D": load(False), "2-D channels-last": load(True)}
    first = next(iter(backends.values()))
    dry = " (both channels-last, as the CPU path always is: a dry run)" if first._channels_last else ""
    print(f"dtype {args.dtype}, device {args.device}{dry}")
    _side_by_side(args, backends)


def compare_graphs(args: argparse.Namespace) -> None:
    """The same batches eager and with CHORUS_CUDA_GRAPHS: GPU time, the model thread's CPU time (the
    launches graphs are meant to cut), and how far apart the waveforms are."""
    from inference.backends import ModelSpec, load_backend

    def load(graphs: bool) -> Any:
        spec = ModelSpec(model=args.model, device=args.device, dtype=args.dtype, cuda_graphs=graphs)
        backend: Any = load_backend(spec)
        backend.warmup()
        return backend

    backends = {"eager": load(False), "graphs": load(True)}
    for temperature in (0.0, 1.0):  # without noise, and with each row's seeded noise drawn inside the graphs
        print(f"dtype {args.dtype}, device {args.device}, temperature {temperature}")
        _side_by_side(args, backends, temperature)
    for part in ("_graphs", "_tail_graphs"):
        graphed = getattr(backends["graphs"], part)
        if graphed is not None:
            print(f"{part.strip('_')} captured: {graphed.graph_count}, still enabled: {graphed.enabled}")


def _side_by_side(args: argparse.Namespace, backends: dict[str, Any], temperature: float = 0.0) -> None:
    """Each batch size through every backend: best of 3 wall and thread-CPU times, max |diff| of the first two."""
    import numpy as np
    import torch

    from inference.backends.base import SynthesisParams
    from service.bench.sentences import SENTENCES

    cuda = torch.device(args.device).type == "cuda"
    first = next(iter(backends.values()))
    params = [SynthesisParams(seed=i, temperature=temperature) for i in range(len(SENTENCES))]
    pool = [job for text, p in zip(SENTENCES, params, strict=True) for job in first.prepare(text, p)]
    for size in [int(s) for s in args.sizes.split(",")]:
        batch = random.Random(size).choices(pool, k=size)
        times: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        outputs: dict[str, list[Any]] = {}
        for name, backend in backends.items():
            outputs[name] = backend.synthesize(batch)  # first run of this shape: algorithm choices, graph capture
        for _ in range(3):
            for name, backend in backends.items():
                if cuda:
                    torch.cuda.synchronize()
                start, thread = time.perf_counter(), time.thread_time()
                backend.synthesize(batch)
                if cuda:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.thread_time() - thread)
        a, b = list(outputs.values())[:2]
        diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
        shown = ", ".join(
            f"{name} {1000 * min(times[name]):.1f} ms ({1000 * min(cpu[name]):.1f} ms CPU)" for name in backends
        )
        print(f"batch {size:4d}: {shown} (best of 3); max |diff| {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
