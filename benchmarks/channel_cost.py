"""What bringing a batch's audio back from the model process costs, with the server's interpreter busy.

With ``CHORUS_MODEL_PROCESS`` the batcher's worker thread sends a batch to the model's process and receives
its audio: megabytes (64 rows of 3 s at 22050 Hz are 17 MB of float32). While it receives, the server's
event loop keeps the interpreter lock busy, and every time the receiving thread takes the lock back it may
wait out a switch interval (5 ms). ``multiprocessing.Connection`` (before 2026-11-29) reads a socket
buffer at a time and takes the lock back after each read; ``inference.backends.remote.Channel`` (since)
receives a message in two reads and sends it in one call. This measures the mechanism alone: this process
sends a batch of ``--rows`` jobs (100 token ids each) and a child process answers with ``--rows`` arrays of
``--samples`` float32 samples, with a thread spinning in Python beside this process's sender and receiver
(``busy``) and without (``idle``), the two channels in alternating rounds:

    python benchmarks/channel_cost.py --rows 64 --samples 66000 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHANNELS = ("multiprocessing Connection", "Channel")


def _answer(connection: Any, channel: bool, rows: int, samples: int) -> None:
    """The child: answer every request with the same batch of audio until told to stop."""
    import numpy as np

    from inference.backends.remote import Channel

    ends = Channel.adopt(connection) if channel else connection
    audio = [np.full(samples, row / rows, np.float32) for row in range(rows)]
    while ends.recv()[0] != "stop":
        ends.send(("ok", audio))


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():  # pure Python, as an event loop parsing requests is
        total = 0
        for i in range(2000):
            total += i


def _rounds(channel: bool, busy: bool, args: argparse.Namespace) -> list[float]:
    import numpy as np

    from inference.backends.base import SynthesisJob
    from inference.backends.remote import Channel

    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    child = context.Process(target=_answer, args=(there, channel, args.rows, args.samples), daemon=True)
    child.start()
    there.close()
    ends: Any = Channel.adopt(here) if channel else here
    batch = ("run", [SynthesisJob(np.arange(100, dtype=np.int64)) for _ in range(args.rows)])
    ends.send(batch)  # warm-up
    ends.recv()
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
    if busy:
        spinner.start()
    walls = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        ends.send(batch)
        ends.recv()
        walls.append(time.perf_counter() - start)
    stop.set()
    ends.send(("stop", None))
    child.join(timeout=30)
    ends.close()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="arrays in an answer")
    parser.add_argument("--samples", type=int, default=66_000, help="float32 samples an array")
    parser.add_argument("--rounds", type=int, default=20, help="round trips a measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each channel, alternating")
    parser.add_argument("--name", help="write benchmarks/results/NAME.{json,md}")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from service.bench.report import machine

    walls: dict[tuple[str, str], list[float]] = {}
    for busy in (False, True):
        for repeat in range(args.repeats):
            for name in CHANNELS if repeat % 2 == 0 else CHANNELS[::-1]:
                key = (name, "busy" if busy else "idle")
                walls.setdefault(key, []).extend(_rounds(name == "Channel", busy, args))
            print(f"{'busy' if busy else 'idle'}: {repeat + 1}/{args.repeats}", file=sys.stderr)
    results = [
        {
            "channel": name,
            "interpreter": where,
            "p50_ms": round(1000 * statistics.median(values), 2),
            "p90_ms": round(1000 * sorted(values)[int(0.9 * (len(values) - 1))], 2),
            "mean_ms": round(1000 * statistics.fmean(values), 2),
        }
        for (name, where), values in walls.items()
    ]
    host = machine()
    megabytes = args.rows * args.samples * 4 / 1e6
    lines = [
        f"{host['cpu']}, {host['cores']} cores, Python {host['python']}; a batch of {args.rows} jobs (100 token "
        f"ids each) answered with {args.rows} arrays of {args.samples} float32 samples ({megabytes:.1f} MB), "
        f"{args.repeats} x {args.rounds} round trips each, channels alternating; busy: a thread spinning in "
        "Python beside the sender and receiver",
        "",
        "| channel | interpreter | round trip p50 ms | p90 ms | mean ms |",
        "|---|---|---|---|---|",
        *(f"| {r['channel']} | {r['interpreter']} | {r['p50_ms']} | {r['p90_ms']} | {r['mean_ms']} |" for r in results),
        "",
    ]
    for where in ("idle", "busy"):
        old, new = (next(r for r in results if r["channel"] == c and r["interpreter"] == where) for c in CHANNELS)
        lines.append(f"{where}: Channel / Connection, mean: x{new['mean_ms'] / max(old['mean_ms'], 1e-9):.3f}")
    print("\n".join(lines))
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        facts = {"machine": host, "rows": args.rows, "samples": args.samples, "rounds": args.rounds,
                 "repeats": args.repeats, "results": results}  # fmt: skip
        (RESULTS / f"{args.name}.json").write_text(json.dumps(facts, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
