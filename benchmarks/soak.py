"""Soak test: thousands of mixed requests against a real ``chorus serve`` on loopback, bounded in count and time.

Mix: plain WAV requests, streamed requests, OpenAI-route MP3 requests, malformed bodies, and clients that
hang up early. Every request that is not abandoned must get either audio for *its own* text (same length
as, and within 1e-3 of full scale of, that text's reference synthesized alone at warm-up) or a clear
error (4xx JSON, or 429/503 with Retry-After). Nothing may be lost. Afterwards the resident memory of the
server's processes (granian's, its workers', model processes') must be within 10 % of its value after
warm-up, no one process may have grown more than 10 % and 8 MiB or come or gone, and the thread and task
counts must be back where they were.

Run: ``python benchmarks/soak.py [--requests 3000] [--concurrency 32] [--model DIR] [--env KEY=VALUE]``
(default model: a tiny random VITS checkpoint written on the spot, so the run measures the service, not the
model; ``--env`` adds a server setting, e.g. ``CHORUS_MODEL_PROCESS=1``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import running_server

_SENTENCE = "the quick brown fox jumps over a lazy dog while seven small birds sing about rain and sunlight"
WORDS = _SENTENCE.split(" ")
#: Sayable by some voices only: espeak-ng reads emoji by name (a Piper voice answers with audio), a model
#: whose vocabulary has no such characters finds nothing to say (422). Either answer is right.
EMOJI_ONLY = b'{"text": "\xf0\x9f\x99\x82\xf0\x9f\x99\x82"}'
MALFORMED = [
    b"not json at all",
    b'{"text": ""}',
    b'{"text": 42}',
    b'{"text": "hi", "temperature": 7}',
    b'{"text": "hi", "speed": 0}',
    b'{"text": "hi", "language": "xx"}',
    b'{"text": "hi", "response_format": "ogg-vorbis"}',
    EMOJI_ONLY,
    b'{"text": "a\\ud800b"}',
    b"[" * 3000 + b"]" * 3000,
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(root: int) -> dict[int, int]:
    """Resident memory of ``root`` and every process under it (granian's workers, model processes)."""
    found: dict[int, int] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            found[pid] = rss_kib(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
    return found


def leaked(before: dict[int, int], after: dict[int, int]) -> list[str]:
    """Processes whose memory grew more than 10 % and 8 MiB, or that came or went."""
    problems = [f"pid {pid} came or went" for pid in sorted(set(before) ^ set(after))]
    for pid in sorted(set(before) & set(after)):
        grew = after[pid] - before[pid]
        if grew > 8 * 1024 and grew > 0.10 * before[pid]:
            problems.append(f"pid {pid}: {before[pid] / 1024:.1f} -> {after[pid] / 1024:.1f} MiB")
    return problems


def pcm(data: bytes) -> Any:
    import numpy as np

    with wave.open(io.BytesIO(data)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int32)


async def main_async(args: argparse.Namespace, url: str, port: int, server_pid: int) -> dict[str, Any]:
    import httpx
    import numpy as np

    rng = random.Random(7)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 30))) + "." for _ in range(40)]
    async with httpx.AsyncClient(
        base_url=url, timeout=120, limits=httpx.Limits(max_connections=args.concurrency)
    ) as client:
        references = []
        for text in texts:
            response = await client.post("/generate", json={"text": text, "temperature": 0})
            response.raise_for_status()
            references.append(pcm(response.content))

        counts: dict[str, int] = {}
        failures: list[str] = []
        deadline = time.monotonic() + args.max_seconds
        queue: asyncio.Queue[int] = asyncio.Queue()

        def count(name: str) -> None:
            counts[name] = counts.get(name, 0) + 1

        def check_refusal(response: httpx.Response, kind: str) -> None:
            if response.status_code in (429, 503) and int(response.headers.get("retry-after", "0")) >= 1:
                count(f"{kind}: refused {response.status_code}")
            else:
                failures.append(f"{kind}: {response.status_code} {response.text[:200]}")

        async def one(i: int) -> None:
            pick = rng.random()
            idx = rng.randrange(len(texts))
            if pick < 0.55:
                response = await client.post("/generate", json={"text": texts[idx], "temperature": 0})
                if response.status_code == 200:
                    got, ref = pcm(response.content), references[idx]
                    if len(got) != len(ref) or int(np.abs(got - ref).max()) > 33:
                        failures.append(f"request {i}: audio is not its own text's")
                    count("wav: own audio")
                else:
                    check_refusal(response, "wav")
            elif pick < 0.70:
                body = {"text": texts[idx], "temperature": 0, "stream": True}
                async with client.stream("POST", "/generate", json=body) as response:
                    data = b"".join([chunk async for chunk in response.aiter_bytes()])
                if response.status_code == 200:
                    got, ref = np.frombuffer(data[44:], dtype="<i2").astype(np.int32), references[idx]
                    if len(got) != len(ref) or int(np.abs(got - ref).max()) > 33:
                        failures.append(f"request {i}: streamed audio is not its own text's")
                    count("stream: own audio")
                else:
                    check_refusal(response, "stream")
            elif pick < 0.80:
                response = await client.post("/v1/audio/speech", json={"model": "tts-1", "input": texts[idx]})
                if response.status_code == 200 and response.content:
                    count("openai: mp3")
                elif response.status_code in (429, 503):
                    count(f"openai: refused {response.status_code}")
                else:
                    failures.append(f"openai: {response.status_code} {response.text[:200]}")
            elif pick < 0.90:
                raw = rng.choice(MALFORMED)
                response = await client.post("/generate", content=raw, headers={"Content-Type": "application/json"})
                if 400 <= response.status_code < 500 and response.json().get("detail"):
                    count(f"malformed: {response.status_code}")
                elif raw == EMOJI_ONLY and response.status_code == 200 and pcm(response.content).size > 0:
                    count("emoji only: spoken")
                elif response.status_code in (429, 503):
                    count(f"malformed: refused {response.status_code}")
                else:
                    failures.append(f"malformed {raw[:30]!r}: {response.status_code} {response.text[:200]}")
            else:
                body = json.dumps({"text": texts[idx]}).encode()
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                await asyncio.sleep(rng.random() * 0.05)
                writer.transport.abort()  # the client hangs up without reading
                count("disconnect")

        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await one(i)
                except Exception as exc:  # a lost request: no answer at all
                    failures.append(f"request {i}: lost ({type(exc).__name__}: {exc})")

        async def phase(requests: int) -> float:
            for i in range(requests):
                queue.put_nowait(i)
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            # Idle worker threads (anyio's pool) retire after 10 s; let them, so what remains is a leak.
            await asyncio.sleep(12.0)
            return time.monotonic() - started - 12.0

        # Warm-up: the same mix at the same concurrency, so thread pools and allocator arenas reach the
        # size this load needs before the baseline is taken.
        await phase(args.warmup_requests)
        warmup_counts, warmup_failures = dict(counts), list(failures)
        counts.clear()
        stats0 = (await client.get("/stats")).json()
        rss0 = tree_rss_kib(server_pid)
        elapsed = await phase(args.requests)
        stats1 = (await client.get("/stats")).json()
        rss1 = tree_rss_kib(server_pid)
        failures.extend(f"warm-up {f}" for f in warmup_failures if f not in failures)
    done = sum(counts.values())
    return {
        "requests": done,
        "seconds": round(elapsed, 1),
        "counts": dict(sorted(counts.items())),
        "failures": failures[:20],
        "failure_count": len(failures),
        "warmup_requests": sum(warmup_counts.values()),
        "processes": len(rss1),
        "rss_after_warmup_mib": round(sum(rss0.values()) / 1024, 1),
        "rss_after_run_mib": round(sum(rss1.values()) / 1024, 1),
        "rss_growth": round(sum(rss1.values()) / sum(rss0.values()) - 1, 4),
        "rss_leaks": leaked(rss0, rss1),
        "threads": [stats0["threads"], stats1["threads"]],
        "tasks": [stats0["tasks"], stats1["tasks"]],
        "server_stats": stats1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup-requests", type=int, default=1500)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="a server setting (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.tiny_model import write_tiny_vits

            model = str(write_tiny_vits(Path(tmp) / "tiny"))
        env = {"CHORUS_MODEL": model, "CHORUS_MAX_QUEUE": "64", "CHORUS_LOG_LEVEL": "WARNING"}
        env.update(item.split("=", 1) for item in args.env)
        with running_server(Path(tmp), env) as server:
            result = asyncio.run(main_async(args, server.url, server.port, server.process.pid))
        result["machine"] = {"cpu_count": os.cpu_count()}
    ok = (
        result["failure_count"] == 0
        and result["rss_growth"] <= 0.10
        and not result["rss_leaks"]
        and result["threads"][1] <= result["threads"][0] + 2  # pool threads come and go; a leak grows
        and result["tasks"][1] <= result["tasks"][0]
    )
    result["ok"] = ok
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
