"""What one request costs the event loop: the app driven in process, the HTTP side made the bottleneck.

On a GPU the model is fast enough that the one interpreter running the event loop limits throughput (the
H200 runs of ``gpu_check.sh`` showed it). This measures that host side on any machine: ``create_app`` is
driven through ASGI in this process (no granian, no sockets) by ``--concurrency`` closed-loop callers
posting ``/generate`` with the benchmark sentences, and it reports requests/s, the event-loop thread's
CPU time per request and the whole process's (every thread: text preparation, the batcher, encoding off the
loop). While one interpreter is the limit, the process's CPU a request bounds its requests a second: what
holds the GIL anywhere is time the loop and the model thread cannot have.

``--zero-model`` (the default; ``--real-model`` turns it off) replaces the VITS forward pass with silence of
a realistic length (800 samples a token), so that everything else (text checks, batching, the batcher
thread's hand-offs, encoding, the response, the access log) is what is measured. It is a profiling device,
never a way the service runs. ``--launches N`` has the model thread make N tiny torch calls a batch first,
each of which lets go of the GIL and takes it back, as a GPU forward pass does launching its kernels: the
model thread then competes with the loop for the interpreter as on a GPU host (with the GPU's batch cap,
``CHORUS_MAX_BATCH_SIZE=64``; ``CHORUS_*`` settings are read from the environment and recorded):

    CHORUS_MAX_BATCH_SIZE=64 python benchmarks/loop_cost.py --launches 3000 --concurrency 32 --baseline HEAD~1

``--baseline REF`` measures a git ref of this repository beside the working tree, alternating runs, each
in a fresh process, and prints the ratios:

    python benchmarks/loop_cost.py --baseline HEAD~3 --runs 4 --name loop-cost-cpu

``--variant KEY=VALUE[,...]`` measures the working tree again with those settings added to the environment,
alternating with the others. With ``CHORUS_MODEL_PROCESS=1`` the stand-in forward pass (and its launches)
runs in the model's own process, whose CPU a request is reported beside the server's:

    CHORUS_MAX_BATCH_SIZE=64 python benchmarks/loop_cost.py --launches 3000 --concurrency 32 \
        --variant CHORUS_MODEL_PROCESS=1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _zero_model(launches: int) -> None:
    import numpy as np
    import torch

    from inference.backends.base import Voiced
    from inference.backends.vits import VitsBackend

    def silence(self: Any, jobs: Any) -> list[Voiced]:
        if launches:  # what a GPU forward pass does on the host: many small calls into torch
            tiny = torch.zeros(1)
            for _ in range(launches):
                tiny.add_(1.0)
        return [Voiced(np.zeros(job.length * 800, np.float32), np.full(job.length, 800, np.int64)) for job in jobs]

    VitsBackend.synthesize_timed = silence  # type: ignore[method-assign,assignment]
    VitsBackend.synthesize = lambda self, jobs: [v.audio for v in silence(self, jobs)]  # type: ignore[method-assign]


def _zero_model_process(*args: Any) -> None:
    """``CHORUS_MODEL_PROCESS``'s child with the same stand-in for the forward pass (spawned: it re-imports
    this script and finds this function by name; the calls a batch come in its environment)."""
    from inference.backends import remote

    _zero_model(int(os.environ["LOOP_COST_LAUNCHES"]))
    remote._serve(*args)


def _children_cpu() -> float:
    """CPU seconds of this process's live children so far (``CHORUS_MODEL_PROCESS``'s model; Linux)."""
    import multiprocessing

    total = 0.0
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _drive(app: Any, concurrency: int, requests: int) -> dict[str, float]:
    from service.bench.sentences import SENTENCES

    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    await lifespan.put({"type": "lifespan.startup"})
    life = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan.get, lifespan_send)
    )
    await started.wait()
    while app.state.chorus.phase.name != "READY":  # noqa: ASYNC110 (the app shows a phase, not an event)
        await asyncio.sleep(0.05)

    async def call(index: int) -> int:
        body = json.dumps({"text": SENTENCES[index % len(SENTENCES)], "language": "en"}).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/generate", "raw_path": b"/generate", "root_path": "", "query_string": b"", "state": {},
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        never = asyncio.Event()
        status = 0

        async def receive() -> dict[str, Any]:
            if pending:
                return pending.pop()
            await never.wait()  # the client never leaves
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                rows.extend(int(value) for name, value in message["headers"] if name == b"x-batch-size")

        await app(scope, receive, send)
        return status

    rows: list[int] = []  # each answer's X-Batch-Size
    for index in range(2 * concurrency):  # warm-up
        await call(index)
    rows.clear()
    issued, failures = 0, 0

    async def caller() -> None:
        nonlocal issued, failures
        while issued < requests:
            issued += 1
            if await call(issued) != 200:
                failures += 1

    wall, cpu, process, child = time.perf_counter(), time.thread_time(), time.process_time(), _children_cpu()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall, cpu, process = time.perf_counter() - wall, time.thread_time() - cpu, time.process_time() - process
    child = _children_cpu() - child
    await lifespan.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life, 60)
    return {
        "requests_per_s": issued / wall,
        "loop_cpu_ms": 1000 * cpu / issued,
        "process_cpu_ms": 1000 * process / issued,
        "model_process_cpu_ms": 1000 * child / issued,
        "mean_batch": statistics.mean(rows) if rows else 0.0,
        "failures": failures,
    }


def _one_run(args: argparse.Namespace) -> None:
    """In a fresh process: import the code under test (``--code``) and print one JSON result line."""
    sys.path.insert(0, args.code)
    if args.zero_model:
        _zero_model(args.launches)
        from inference.backends import remote

        os.environ["LOOP_COST_LAUNCHES"] = str(args.launches)
        remote._serve = _zero_model_process  # type: ignore[assignment]  # read when the child is started
    from service.app import create_app
    from service.settings import Settings

    os.environ["CHORUS_MODEL"] = args.model
    app = create_app(Settings.from_env())
    result = asyncio.run(_drive(app, args.concurrency, args.requests))
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(code: str, env: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--one-run", "--code", code, "--model", args.model,
               "--concurrency", str(args.concurrency), "--requests", str(args.requests),
               "--zero-model" if args.zero_model else "--real-model", "--launches", str(args.launches)]  # fmt: skip
    environment = {**os.environ, **env}
    out = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True, env=environment).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: a tiny random Piper-layout voice)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each version, alternating")
    parser.add_argument("--baseline", help="a git ref measured beside the working tree")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also measure the working tree with these settings added to the environment (repeatable), "
        "e.g. CHORUS_MODEL_PROCESS=1",
    )
    parser.add_argument("--name", help="write benchmarks/results/NAME.{json,md}")
    parser.add_argument("--zero-model", dest="zero_model", action="store_true", default=True)
    parser.add_argument("--real-model", dest="zero_model", action="store_false")
    parser.add_argument(
        "--launches",
        type=int,
        default=0,
        help="with --zero-model, tiny torch calls a batch, as a GPU forward pass launches kernels (the Piper "
        "voice makes ~1,300 torch operations a batch, counted on CPU): the model thread then competes for the "
        "interpreter as it does on a GPU",
    )
    parser.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        _one_run(args)
        return

    sys.path.insert(0, str(ROOT))
    from service.bench.report import machine

    with tempfile.TemporaryDirectory(prefix="chorus-loop-cost-") as tmp:
        if args.model is None:
            from tests.tiny_model import write_tiny_piper_voice

            args.model = str(write_tiny_piper_voice(Path(tmp) / "voice"))
        versions: dict[str, tuple[str, dict[str, str]]] = {"working tree": (str(ROOT), {})}
        if args.baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.baseline],
                           check=True)  # fmt: skip
            versions = {args.baseline: (str(worktree), {}), **versions}
        for variant in args.variant:
            settings = dict(item.split("=", 1) for item in variant.split(","))
            versions[variant] = (str(ROOT), settings)
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in versions}
        try:
            for run in range(args.runs):
                for label, (code, env) in versions.items():
                    result = _spawn(code, env, args)
                    runs[label].append(result)
                    rate, cpu, failed = result["requests_per_s"], result["loop_cpu_ms"], result["failures"]
                    print(
                        f"run {run + 1} {label:>24}: {rate:7.1f} req/s, {cpu:.3f} ms loop CPU/req, "
                        f"{result['process_cpu_ms']:.3f} ms process CPU/req, "
                        f"{result['model_process_cpu_ms']:.3f} ms model process CPU/req, "
                        f"mean batch {result['mean_batch']:.1f}, {failed:.0f} failed"
                    )
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)

    summary = {
        label: {
            "requests_per_s": statistics.mean(r["requests_per_s"] for r in results),
            "loop_cpu_ms": statistics.mean(r["loop_cpu_ms"] for r in results),
            "process_cpu_ms": statistics.mean(r["process_cpu_ms"] for r in results),
            "model_process_cpu_ms": statistics.mean(r["model_process_cpu_ms"] for r in results),
            "mean_batch": statistics.mean(r["mean_batch"] for r in results),
            "runs": results,
        }
        for label, results in runs.items()
    }
    lines = [
        "| version | requests/s (mean) | loop CPU ms a request (mean) | process CPU ms a request (mean) "
        "| model process CPU ms a request (mean) | mean batch | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in summary.items():
        lines.append(
            f"| {label} | {row['requests_per_s']:.1f} | {row['loop_cpu_ms']:.3f} | {row['process_cpu_ms']:.3f} "
            f"| {row['model_process_cpu_ms']:.3f} | {row['mean_batch']:.1f} | {len(row['runs'])} |"
        )
    reference = args.baseline or "working tree"
    for label in summary:
        if label == reference:
            continue
        base, new = summary[reference], summary[label]
        lines.append("")
        rate = new["requests_per_s"] / base["requests_per_s"]
        cpu = new["loop_cpu_ms"] / base["loop_cpu_ms"]
        process = new["process_cpu_ms"] / base["process_cpu_ms"]
        lines.append(
            f"{label} / {reference}: requests/s x{rate:.2f}, loop CPU a request x{cpu:.2f}, "
            f"process CPU a request x{process:.2f}"
        )
    table = "\n".join(lines)
    print(table)
    if args.name:
        facts = {"machine": machine(), "concurrency": args.concurrency, "requests": args.requests,
                 "zero_model": args.zero_model, "launches": args.launches, "baseline": args.baseline,
                 "variants": args.variant,
                 "settings": {k: v for k, v in os.environ.items() if k.startswith("CHORUS_")},
                 "versions": summary}  # fmt: skip
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(facts, indent=2) + "\n")
        host = facts["machine"]
        launches = args.launches if args.zero_model else 0
        heading = (
            f"{host['cpu']}, {host['cores']} cores, Python {host['python']}, torch {host['torch']}; "
            f"{args.concurrency} callers, {args.requests} requests a run, runs alternating, "
            + (
                "forward pass replaced by silence (--zero-model)"
                if args.zero_model
                else "the model's real forward pass"
            )
            + (f" after {launches} tiny torch calls a batch (--launches)" if launches else "")
            + "".join(f", {k}={v}" for k, v in facts["settings"].items())
        )
        (RESULTS / f"{args.name}.md").write_text(heading + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
