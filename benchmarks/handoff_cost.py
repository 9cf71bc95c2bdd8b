"""What handing a batch's results back to a busy event loop costs the worker thread.

The batcher's worker thread settles each caller's future on the event loop with
``loop.call_soon_threadsafe``, which wakes the loop by writing to a socket, and the write lets go of the
GIL. When the loop is busy with Python work (a loaded server), getting the GIL back can take Python's whole
switch interval (5 ms), once per hand-off. On a GPU the worker thread is the critical path, so this measures
the mechanism alone: a loop kept busy in 0.5 ms slices of Python, and a thread handing back ``--rows``
results one hand-off a result (the batcher before 2026-11-29) or one hand-off for all (since), in
alternating rounds. It prints the worker thread's wall time per batch:

    python benchmarks/handoff_cost.py --rows 64 --rounds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("one a result", "one a batch")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _busy(stop: asyncio.Event) -> None:
    while not stop.is_set():
        _spin(0.0005)
        await asyncio.sleep(0)


async def _round(mode: str, rows: int) -> float:
    """One batch handed back while the loop is busy: the worker thread's wall seconds for it."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(rows)]
    took: list[float] = []

    def settle_all() -> None:
        for future in futures:
            future.set_result(None)

    def hand_back() -> None:
        start = time.perf_counter()
        if mode == "one a result":
            for future in futures:
                loop.call_soon_threadsafe(future.set_result, None)
        else:
            loop.call_soon_threadsafe(settle_all)
        took.append(time.perf_counter() - start)

    worker = threading.Thread(target=hand_back)
    worker.start()
    await asyncio.gather(*futures)
    worker.join()
    return took[0]


async def _measure(rows: int, rounds: int, report: Callable[[str], None]) -> dict[str, list[float]]:
    stop = asyncio.Event()
    busy = asyncio.ensure_future(_busy(stop))
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(rounds):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            walls[mode].append(await _round(mode, rows))
        if (i + 1) % 10 == 0:
            report(f"{i + 1}/{rounds} rounds")
    stop.set()
    await busy
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="results in a batch")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--name", help="write benchmarks/results/NAME.{json,md}")
    args = parser.parse_args()
    walls = asyncio.run(_measure(args.rows, args.rounds, lambda line: print(line, file=sys.stderr)))
    rows = []
    for mode in MODES:
        ordered = sorted(walls[mode])
        rows.append({
            "mode": mode,
            "p50_ms": round(1000 * statistics.median(ordered), 3),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3),
            "mean_ms": round(1000 * statistics.fmean(ordered), 3),
        })  # fmt: skip
    sys.path.insert(0, str(RESULTS.parents[1]))
    from service.bench.report import machine

    host = machine()
    where = f"{host['cpu']}, {host['cores']} cores, Python {host['python']}"
    lines = [
        f"{where}; {args.rows} results a batch, {args.rounds} alternating rounds, the loop busy in 0.5 ms slices",
        "",
        "| hand-offs | worker wall p50 ms | p90 ms | mean ms |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r['p50_ms']} | {r['p90_ms']} | {r['mean_ms']} |" for r in rows),
        "",
        f"one a batch / one a result, mean: x{rows[1]['mean_ms'] / max(rows[0]['mean_ms'], 1e-9):.3f}",
    ]
    print("\n".join(lines))
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(
            json.dumps({"machine": host, "rows": args.rows, "rounds": args.rounds, "results": rows}, indent=2) + "\n"
        )
        (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
