"""An async HTTP load generator for speech endpoints: closed loop at a concurrency, open loop at a rate.

Every request posts one text of the fixed sentence set (``{"text", "seed"}``, or OpenAI's body on
``/v1/audio/speech``) and records its status, latency, time to the first audio byte (the first body
byte past a WAV header: a streamed WAV's header goes out before any synthesis), audio seconds (from
``X-Audio-Duration-S``, else from the WAV itself, so servers other than Chorus can be measured) and
``X-Batch-Size``. A run's summary is one row of the results table (``ttfb_*`` keep the usual name).
Requests go through ``service.bench.client``, a lean HTTP/1.1 client, so that the load generator costs
little of the machine it often shares with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.bench.client import Connections, HTTPError
from service.bench.sentences import SENTENCES

__all__ = ["Outcome", "Target", "closed_loop", "open_loop", "summarize", "wav_seconds"]


@dataclass(frozen=True)
class Target:
    """Where and how to send requests."""

    url: str
    route: str = "/generate"
    api_key: str | None = None
    bearer: str | None = None
    texts: tuple[str, ...] = tuple(SENTENCES)
    response_format: str = "wav"
    stream: bool = False
    timeout_s: float = 300.0
    #: Closed loop: a caller refused with ``Retry-After`` (429/503) waits that long before its next request,
    #: as a well-behaved client does; False retries at once (and measures a storm of refusals).
    honour_retry_after: bool = True
    #: ``--live``: the session's ``chunking`` (None: the server's default).
    chunking: str | None = None
    #: ``--live``: which text-in WebSocket the agents speak: Chorus's own, or ElevenLabs' ``stream-input``.
    protocol: str = "chorus"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        return headers

    def body(self, index: int) -> dict[str, Any]:
        text = self.texts[index % len(self.texts)]
        if self.route.startswith("/v1/"):
            return {"model": "tts-1", "input": text, "voice": "default", "response_format": self.response_format,
                    "seed": index}  # fmt: skip
        body: dict[str, Any] = {"text": text, "seed": index}
        if self.response_format != "wav":
            body["response_format"] = self.response_format
        if self.stream:
            body["stream"] = True
        return body


@dataclass
class Outcome:
    """One request: when it started (s since the run began), how long it took, what came back."""

    started_s: float
    status: int
    latency_s: float
    ttfb_s: float | None  # to the first audio byte (past a WAV header)
    audio_s: float = 0.0
    batch_size: int | None = None
    chars: int = 0
    retry_after_s: float | None = None  # a refusal's Retry-After


def wav_seconds(body: bytes) -> float:
    """Duration of a PCM WAV from its fmt chunk and byte count (streamed WAVs carry no sizes)."""
    if len(body) < 12 or body[:4] != b"RIFF" or body[8:12] != b"WAVE":
        return 0.0
    offset, rate, block = 12, 0, 0
    while offset + 8 <= len(body):
        kind, size = body[offset : offset + 4], struct.unpack("<I", body[offset + 4 : offset + 8])[0]
        if kind == b"fmt ":
            rate, block = struct.unpack("<I", body[offset + 12 : offset + 16])[0], body[offset + 20]
        if kind == b"data":
            data = len(body) - offset - 8
            return data / (rate * block) if rate and block else 0.0
        offset += 8 + size + (size % 2)
    return 0.0


async def _request(client: Connections, target: Target, index: int, started: float) -> Outcome:
    t0 = time.perf_counter()
    body = target.body(index)
    chars = len(body.get("text") or body.get("input") or "")
    try:
        reply = await client.request("POST", target.route, json.dumps(body).encode(), target.headers())
    except HTTPError:
        return Outcome(t0 - started, 0, time.perf_counter() - t0, None, chars=chars)  # status 0: no answer
    latency = time.perf_counter() - t0
    if reply.status != 200:
        retry = reply.headers.get("retry-after", "")
        retry_after = float(retry) if retry.replace(".", "", 1).isdigit() else None
        return Outcome(t0 - started, reply.status, latency, reply.first_audio_s, chars=chars, retry_after_s=retry_after)
    header = reply.headers.get("x-audio-duration-s")
    audio = float(header) if header else wav_seconds(reply.body)
    batch = reply.headers.get("x-batch-size")
    return Outcome(t0 - started, 200, latency, reply.first_audio_s, audio, int(batch) if batch else None, chars)


class _Progress:
    """One line on stderr, rewritten each second, while a run goes on."""

    def __init__(self, label: str, outcomes: list[Outcome], duration_s: float, quiet: bool) -> None:
        self.label, self.outcomes, self.duration_s, self.quiet = label, outcomes, duration_s, quiet
        self.t0 = time.perf_counter()
        self.live = sys.stderr.isatty()  # into a file or pipe: only each run's final line

    async def run(self) -> None:
        if self.quiet or not self.live:
            return
        while True:
            await asyncio.sleep(1.0)
            self.show()

    def show(self, end: str = "") -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        ok = sum(1 for o in self.outcomes if o.status == 200)
        audio = sum(o.audio_s for o in self.outcomes)
        start = "\r" if self.live else ""
        print(
            f"{start}  {self.label:<28} {min(elapsed, self.duration_s):5.1f}/{self.duration_s:.0f} s  "
            f"ok {ok:>5}  errors {len(self.outcomes) - ok:>4}  {audio / max(elapsed, 1e-9):8.2f} audio-s/s",
            end=end,
            file=sys.stderr,
            flush=True,
        )


@contextlib.asynccontextmanager
async def _client(target: Target, connections: int) -> AsyncIterator[Connections]:
    client = Connections(target.url, limit=connections, timeout_s=target.timeout_s)
    try:
        yield client
    finally:
        client.close()


async def closed_loop(
    target: Target,
    concurrency: int,
    *,
    duration_s: float,
    max_requests: int | None = None,
    first_index: int = 0,
    label: str = "",
    quiet: bool = False,
) -> tuple[list[Outcome], float]:
    """``concurrency`` callers, each sending its next request when the last one answers (after the
    ``Retry-After`` of a refusal, unless ``target.honour_retry_after`` is False), until the duration (or
    the request budget) is spent; in-flight requests finish. Returns outcomes and wall time."""
    outcomes: list[Outcome] = []
    counter = iter(range(first_index, first_index + (max_requests or 10**12)))
    progress = _Progress(label or f"closed c={concurrency}", outcomes, duration_s, quiet)
    async with _client(target, concurrency) as client:
        t0 = time.perf_counter()
        stop_at = t0 + duration_s

        async def caller() -> None:
            for index in counter:
                if time.perf_counter() >= stop_at:
                    return
                outcome = await _request(client, target, index, t0)
                outcomes.append(outcome)
                if outcome.retry_after_s and target.honour_retry_after:
                    await asyncio.sleep(min(outcome.retry_after_s, max(0.0, stop_at - time.perf_counter())))

        ticker = asyncio.create_task(progress.run())
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        ticker.cancel()
    progress.show(end="\n")
    return outcomes, wall


async def open_loop(
    target: Target,
    rate_rps: float,
    *,
    duration_s: float,
    seed: int = 0,
    max_in_flight: int = 1024,
    first_index: int = 0,
    label: str = "",
    quiet: bool = False,
) -> tuple[list[Outcome], float]:
    """Poisson arrivals at ``rate_rps`` for ``duration_s`` whatever the server does (arrivals beyond
    ``max_in_flight`` outstanding are counted as errors with status 0, not delayed)."""
    outcomes: list[Outcome] = []
    arrivals = random.Random(seed)
    progress = _Progress(label or f"open {rate_rps:g} req/s", outcomes, duration_s, quiet)
    async with _client(target, max_in_flight) as client:
        t0 = time.perf_counter()
        ticker = asyncio.create_task(progress.run())
        tasks: set[asyncio.Task[None]] = set()
        next_at, index = t0, first_index

        async def one(i: int) -> None:
            outcomes.append(await _request(client, target, i, t0))

        while True:
            next_at += arrivals.expovariate(rate_rps)
            if next_at - t0 >= duration_s:
                break
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if len(tasks) >= max_in_flight:
                outcomes.append(Outcome(next_at - t0, 0, 0.0, None))
            else:
                task = asyncio.create_task(one(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            index += 1
        if tasks:
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        ticker.cancel()
    progress.show(end="\n")
    return outcomes, wall


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def summarize(
    system: str, outcomes: list[Outcome], wall_s: float, *, concurrency: int | None, rate_rps: float | None = None
) -> dict[str, Any]:
    """One results row: counts, throughput, latency and time-to-first-byte percentiles, batch sizes."""
    ok = [o for o in outcomes if o.status == 200]
    latencies = [o.latency_s for o in ok]
    ttfbs = [o.ttfb_s for o in ok if o.ttfb_s is not None]
    errors = Counter(str(o.status) for o in outcomes if o.status != 200)
    batches = Counter(o.batch_size for o in ok if o.batch_size is not None)
    audio = sum(o.audio_s for o in ok)
    return {
        "system": system,
        "mode": "closed" if rate_rps is None else "open",
        "concurrency": concurrency,
        "rate_rps": rate_rps,
        "requests": len(outcomes),
        "errors": len(outcomes) - len(ok),
        "errors_by_status": dict(sorted(errors.items())),
        "wall_s": round(wall_s, 3),
        "audio_s": round(audio, 3),
        "throughput_audio_s_per_s": round(audio / wall_s, 3) if wall_s > 0 else 0.0,
        "requests_per_s": round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        "chars_per_s": round(sum(o.chars for o in ok) / wall_s, 1) if wall_s > 0 else 0.0,
        "p50_ms": _ms(latencies, 50),
        "p90_ms": _ms(latencies, 90),
        "p99_ms": _ms(latencies, 99),
        "ttfb_p50_ms": _ms(ttfbs, 50),
        "ttfb_p99_ms": _ms(ttfbs, 99),
        "batch_sizes": {str(size): count for size, count in sorted(batches.items())},
    }
