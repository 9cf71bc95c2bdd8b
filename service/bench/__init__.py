"""``chorus bench``: load-test any Chorus (or compatible) URL and write JSON, Markdown and PNG results.

    chorus bench http://localhost:8000 --concurrency 1,4,16 --rates 2,8 --duration 20

Closed loop at each concurrency (callers send their next request when the last one answers), then
open loop with Poisson arrivals at each rate; a warm-up first; every run bounded by ``--duration`` and
``--max-requests``. The key comes from ``--api-key`` or ``API_KEY``; behind RunPod, RunPod's key goes in
``--bearer`` or ``RUNPOD_API_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from service.bench.live import live_loop, summarize_live
from service.bench.loadgen import Target, closed_loop, open_loop, summarize
from service.bench.report import machine, markdown_table, write_results
from service.bench.sentences import SENTENCES

__all__ = [
    "WARMUP_FIRST_INDEX",
    "cost_per_million_chars",
    "live_sweep",
    "main",
    "read_texts",
    "server_late_s",
    "sweep",
    "warm_up",
]

#: Warm-up requests are numbered from here, away from the measured runs' 0, 1, 2 ...
WARMUP_FIRST_INDEX = 1_000_000


def _numbers(text: str, kind: type[float] | type[int]) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("every value must be positive")
    return values


def read_texts(path: Path) -> tuple[str, ...]:
    """An operator's own request texts: one per line, or a JSON list of strings (``.json``); blank lines are
    skipped. ``ValueError`` names what is wrong."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            texts = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{path} must hold a JSON list of strings")
        found = tuple(t for t in texts if t.strip())
    else:
        found = tuple(line.strip() for line in raw.splitlines() if line.strip())
    if not found:
        raise ValueError(f"{path} holds no texts")
    return found


def _served_model(target: Target) -> str | None:
    try:
        response = httpx.get(target.url + "/v1/models", headers=target.headers(), timeout=10)
        if response.status_code == 200:
            return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        pass
    return None


def cost_per_million_chars(price_per_hour: float, chars_per_s: float) -> float | None:
    """What a million characters cost on a worker at this price, served at this rate all hour long."""
    if chars_per_s <= 0:
        return None
    return round(price_per_hour / (chars_per_s * 3600) * 1_000_000, 4)


async def sweep(
    target: Target,
    system: str,
    *,
    concurrencies: list[int],
    rates: list[float],
    duration_s: float,
    warmup_s: float,
    max_requests: int | None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Warm up, then one closed-loop run per concurrency and one open-loop run per rate.

    Every measured run starts at request 0 of the sentence set (texts and seeds), so every system and
    every level sees the same sequence of requests; the warm-up uses requests from elsewhere.
    """
    rows = []
    await warm_up(target, system, concurrencies, warmup_s, quiet=quiet)
    for concurrency in concurrencies:
        outcomes, wall = await closed_loop(
            target, concurrency, duration_s=duration_s, max_requests=max_requests, label=f"{system} c={concurrency}",
            quiet=quiet,
        )  # fmt: skip
        rows.append(summarize(system, outcomes, wall, concurrency=concurrency))
    for rate in rates:
        outcomes, wall = await open_loop(target, rate, duration_s=duration_s, label=f"{system} {rate:g} req/s",
                                         quiet=quiet)  # fmt: skip
        rows.append(summarize(system, outcomes, wall, concurrency=None, rate_rps=rate))
    return rows


async def warm_up(
    target: Target, system: str, concurrencies: list[int], warmup_s: float, *, quiet: bool = False
) -> None:
    """``warmup_s`` of closed-loop requests: half at the highest concurrency, the rest split over the others,
    highest first. A server that prepares something per batch shape (cuDNN's algorithm choices, CUDA graphs)
    then meets the batch sizes every level makes before it is measured, not during its first run."""
    if warmup_s <= 0:
        return
    levels = sorted(set(concurrencies or [4]), reverse=True)
    shares = [warmup_s] if len(levels) == 1 else [warmup_s / 2] + [warmup_s / 2 / (len(levels) - 1)] * (len(levels) - 1)
    for level, share in zip(levels, shares, strict=True):
        await closed_loop(
            target, level, duration_s=share, first_index=WARMUP_FIRST_INDEX, label=f"{system} warm-up c={level}",
            quiet=quiet,
        )  # fmt: skip


async def live_sweep(
    target: Target,
    system: str,
    *,
    concurrencies: list[int],
    duration_s: float,
    warmup_s: float,
    chars_per_s: float,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Warm up, then one run of concurrent conversations per concurrency (``service.bench.live``)."""
    if warmup_s > 0:
        await live_loop(target, 1, duration_s=warmup_s, chars_per_s=chars_per_s, label=f"{system} warm-up",
                        quiet=quiet)  # fmt: skip
    rows = []
    for sessions in concurrencies:
        late_before = await asyncio.to_thread(server_late_s, target)
        outcomes, wall = await live_loop(
            target, sessions, duration_s=duration_s, chars_per_s=chars_per_s, label=f"{system} {sessions} live",
            quiet=quiet,
        )  # fmt: skip
        row = summarize_live(system, outcomes, wall, sessions=sessions)
        late_after = await asyncio.to_thread(server_late_s, target)
        if late_before is not None and late_after is not None:  # the server's own view of its stalls
            row["server_late_s"] = round(late_after - late_before, 3)
        rows.append({**row, "writing_chars_per_s": chars_per_s, "chunking": target.chunking or "auto",
                     "protocol": target.protocol})  # fmt: skip
    return rows


def server_late_s(target: Target) -> float | None:
    """A Chorus server's count of seconds its live listeners waited for audio whose text it already had
    (``/stats``), or None where there is none (another server, an older Chorus, a refused key)."""
    try:
        response = httpx.get(target.url + "/stats", headers=target.headers(), timeout=10)
        return float(response.json()["live_late_s"]) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chorus bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="the server's base URL, e.g. http://localhost:8000")
    parser.add_argument("--route", default="/generate", help="/generate (default) or /v1/audio/speech")
    parser.add_argument("--concurrency", type=lambda t: _numbers(t, int), default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--rates", type=lambda t: _numbers(t, float), default=[], help="open-loop req/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up first (default 5)")
    parser.add_argument("--max-requests", type=int, default=None, help="most requests per closed-loop run")
    parser.add_argument("--format", default="wav", help="response_format to ask for (default wav)")
    parser.add_argument("--stream", action="store_true", help="ask for streamed audio (TTFB = first audio)")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"), help="X-API-Key (default $API_KEY)")
    parser.add_argument("--bearer", default=os.environ.get("RUNPOD_API_KEY"), help="default $RUNPOD_API_KEY")
    parser.add_argument("--system", default="chorus", help="the label of this system in the results")
    parser.add_argument("--model", default=None, help="the model's name in the results (default: asked)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON here (+ .md and PNG plots)")
    parser.add_argument(
        "--price-per-hour", type=float, default=None,
        help="the worker's hourly price: adds the cost per million characters to every row",
    )  # fmt: skip
    parser.add_argument(
        "--no-backoff", action="store_true",
        help="closed loop: retry a refused request at once instead of after its Retry-After",
    )  # fmt: skip
    parser.add_argument(
        "--texts", type=Path, default=None,
        help="your own request texts, one per line (or a .json list of strings); default: the built-in mixed set",
    )  # fmt: skip
    parser.add_argument(
        "--live", action="store_true",
        help="voice agents instead of requests: each concurrency is that many conversations over the live "
        "WebSocket, text written at --chars-per-s; rows say how many stalled (not real time)",
    )  # fmt: skip
    parser.add_argument(
        "--chars-per-s", type=float, default=200.0, help="--live: how fast the agents' text is written (default 200)"
    )
    parser.add_argument(
        "--chunking", choices=("auto", "sentence", "clause"), default=None,
        help="--live: the sessions' chunking (default: the server's, auto)",
    )  # fmt: skip
    parser.add_argument(
        "--protocol", choices=("chorus", "elevenlabs"), default="chorus",
        help="--live: Chorus's own text-in WebSocket, or ElevenLabs' stream-input (as Pipecat-style agents speak)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    texts = tuple(SENTENCES)
    if args.texts is not None:
        try:
            texts = read_texts(args.texts)
        except ValueError as exc:
            print(f"chorus bench: --texts: {exc}", file=sys.stderr)
            return 2
    target = Target(
        url=args.url.rstrip("/"), route=args.route, api_key=args.api_key or None, bearer=args.bearer or None,
        texts=texts, response_format=args.format, stream=args.stream, honour_retry_after=not args.no_backoff,
        chunking=args.chunking, protocol=args.protocol,
    )  # fmt: skip
    try:
        probe = httpx.get(target.url + "/ping", timeout=10)
    except httpx.HTTPError as exc:
        print(f"chorus bench: cannot reach {target.url}: {exc}", file=sys.stderr)
        return 2
    if probe.status_code != 200:
        print(f"chorus bench: {target.url}/ping answered {probe.status_code}, not ready", file=sys.stderr)
        return 2
    if args.live:
        rows = asyncio.run(
            live_sweep(
                target, args.system, concurrencies=args.concurrency, duration_s=args.duration,
                warmup_s=args.warmup, chars_per_s=args.chars_per_s, quiet=args.quiet,
            )
        )  # fmt: skip
    else:
        rows = asyncio.run(
            sweep(
                target, args.system, concurrencies=args.concurrency, rates=args.rates, duration_s=args.duration,
                warmup_s=args.warmup, max_requests=args.max_requests, quiet=args.quiet,
            )
        )  # fmt: skip
    if args.price_per_hour is not None:
        for row in rows:
            row["cost_per_million_chars"] = cost_per_million_chars(args.price_per_hour, row["chars_per_s"])
    print(markdown_table(rows))
    if args.out:
        document = {
            "name": args.out.stem,
            "machine": machine(),
            "model": args.model or _served_model(target),
            "target": target.url,
            "texts": {
                "source": str(args.texts) if args.texts else "built-in",
                "count": len(texts),
                "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
            },
            "rows": rows,
        }
        for path in write_results(args.out, document):
            print(f"wrote {path}")
    failed = sum(row["errors"] for row in rows)
    return 1 if rows and failed == sum(row["requests"] for row in rows) else 0
