"""Diagnose one slow batch shape on CUDA: time and peak memory per stage for a batch of N rows."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from inference.backends import ModelSpec, load_backend
    from inference.backends.base import SynthesisParams
    from service.bench.sentences import SENTENCES

    dtype, size = sys.argv[1], int(sys.argv[2])
    backend = load_backend(
        ModelSpec(model=str(Path(__file__).resolve().parents[1] / ".gpu" / "voice"), device="cuda", dtype=dtype)
    )
    backend.warmup()
    pool = [job for i, text in enumerate(SENTENCES) for job in backend.prepare(text, SynthesisParams(seed=i))]
    batch = random.Random(size).choices(pool, k=size)
    original = backend._decode

    def timed_decode(*args, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        torch.cuda.synchronize()
        print(
            f"  decoder input {tuple(args[0].shape)}: {1000 * (time.perf_counter() - t0):.1f} ms, "
            f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
            flush=True,
        )
        return out

    backend._decode = timed_decode
    for _ in range(2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        backend.synthesize(batch)
        print(f"{dtype} batch {size}: {1000 * (time.perf_counter() - t0):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
