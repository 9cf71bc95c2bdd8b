"""``chorus bench --live``: how many voice-agent conversations one endpoint keeps in real time.

Each simulated agent opens ``/v1/audio/speech/stream-input`` (or, with ``--protocol elevenlabs``, ElevenLabs'
``/v1/text-to-speech/{voice_id}/stream-input``, as Pipecat-style agents do), writes an answer of three sentences a few
characters at a time at a language model's pace (``--chars-per-s``), closes, and plays what comes back in
real time, as a phone would: playback starts 20 ms after the first audio (a jitter buffer), a stall is
any moment the next audio has not arrived when the last has finished playing, and the agent's next
conversation starts once this one has been heard. A session is real-time when it never stalls. At each
concurrency, that many agents hold conversations back to back for the run's duration, so the load is
that many real-time streams.

Per row: sessions, errors, time to first audio (from the first character sent), the sessions that
stalled and the seconds of stall, and audio seconds per wall second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.bench.loadgen import Target

__all__ = ["LiveOutcome", "live_loop", "playback_stalls", "summarize_live"]

#: Characters per message: about one token of a language model.
PIECE_CHARS = 4
#: The player starts this long after the first audio arrives (a telephone's jitter buffer).
JITTER_S = 0.02


@dataclass
class LiveOutcome:
    """One conversation: when its audio came and how it ended."""

    ok: bool = False
    close_code: int | None = None
    #: From the first character sent to the first audio byte.
    ttfa_s: float | None = None
    #: (arrival time from the session's start, seconds of audio) per binary frame.
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    audio_s: float = 0.0
    stall_s: float = 0.0
    #: ``time.monotonic()`` when the caller has heard it all: the next conversation starts after that.
    heard_at: float = 0.0
    #: Characters of the answer (counted when the conversation succeeded).
    chars: int = 0
    #: A refusal's ``retry_after_s``: a well-behaved agent waits that long before trying again.
    retry_after_s: float | None = None


def playback_stalls(arrivals: list[tuple[float, float]], jitter_s: float = JITTER_S) -> tuple[float, float]:
    """A player that starts ``jitter_s`` after the first audio: the seconds it waits for later audio (0: it
    kept up), and when it finishes playing (same clock as the arrivals)."""
    stalled = 0.0
    playing_until: float | None = None
    for arrived, seconds in arrivals:
        if playing_until is None:
            playing_until = arrived + jitter_s
        elif arrived > playing_until:
            stalled += arrived - playing_until
            playing_until = arrived
        playing_until += seconds
    return stalled, playing_until or 0.0


def _answer(target: Target, index: int) -> str:
    texts = target.texts
    return " ".join(texts[(3 * index + k) % len(texts)] for k in range(3))


#: ElevenLabs agents ask for this PCM rate (what Pipecat asks for by default).
ELEVENLABS_RATE_HZ = 24000


def _url(target: Target) -> str:
    base = target.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    if target.protocol == "elevenlabs":
        return f"{base}/v1/text-to-speech/bench/stream-input?output_format=pcm_{ELEVENLABS_RATE_HZ}&seed=0"
    chunking = f"&chunking={target.chunking}" if target.chunking else ""
    return f"{base}/v1/audio/speech/stream-input?response_format=pcm&seed=0{chunking}"


def _messages(target: Target, answer: str) -> list[dict[str, Any]]:
    """What an agent sends: the answer a few characters at a time, then the end, in the target's protocol."""
    pieces = [answer[i : i + PIECE_CHARS] for i in range(0, len(answer), PIECE_CHARS)]
    if target.protocol == "elevenlabs":
        return [{"text": " "}, *({"text": piece} for piece in pieces), {"text": ""}]
    return [*({"type": "speak", "text": piece} for piece in pieces), {"type": "close"}]


async def _conversation(target: Target, index: int, chars_per_s: float) -> LiveOutcome:
    import websockets

    outcome = LiveOutcome()
    headers = {k: v for k, v in target.headers().items() if k != "Content-Type"}
    if target.protocol == "elevenlabs" and target.api_key:
        headers["xi-api-key"] = target.api_key  # (as ElevenLabs clients send it)
    answer = _answer(target, index)
    elevenlabs = target.protocol == "elevenlabs"
    rate_hz = 0
    pending: list[tuple[float, int]] = []  # (arrival, bytes) until the rate is known
    try:
        async with websockets.connect(_url(target), additional_headers=headers, max_size=None) as ws:
            started = time.monotonic()

            async def write() -> None:
                messages = _messages(target, answer)
                for message in messages[:-1]:
                    await ws.send(json.dumps(message))
                    if message.get("text", " ") != " ":
                        await asyncio.sleep(PIECE_CHARS / chars_per_s)
                await ws.send(json.dumps(messages[-1]))

            writer = asyncio.ensure_future(write())
            try:
                async for message in ws:
                    now = time.monotonic() - started
                    if isinstance(message, bytes):
                        if outcome.ttfa_s is None:
                            outcome.ttfa_s = now
                        pending.append((now, len(message)))
                        continue
                    event = json.loads(message)
                    if elevenlabs and event.get("audio"):  # audio rides in JSON, base64
                        if outcome.ttfa_s is None:
                            outcome.ttfa_s = now
                        pending.append((now, len(base64.b64decode(event["audio"]))))
                    elif event.get("type") == "done" or (elevenlabs and event.get("isFinal") is True):
                        rate_hz = ELEVENLABS_RATE_HZ if elevenlabs else int(event["sample_rate"])
                    elif event.get("type") == "error" or "error" in event:  # the close that follows says how
                        outcome.retry_after_s = event.get("retry_after_s")
            except websockets.exceptions.ConnectionClosedError:
                pass  # closed with an error code (read below) or without a close frame (None)
            finally:
                writer.cancel()
                with contextlib.suppress(BaseException):  # (a send to a closed socket is no news)
                    await writer
            outcome.close_code = ws.close_code
    except (TimeoutError, OSError, websockets.exceptions.WebSocketException):
        return outcome
    outcome.ok = outcome.close_code == 1000 and rate_hz > 0
    if outcome.ok:
        outcome.chars = len(answer)
        outcome.arrivals = [(t, size / 2 / rate_hz) for t, size in pending]
        outcome.audio_s = sum(seconds for _, seconds in outcome.arrivals)
        outcome.stall_s, played_s = playback_stalls(outcome.arrivals)
        outcome.heard_at = started + played_s
    return outcome


async def live_loop(
    target: Target, sessions: int, *, duration_s: float, chars_per_s: float, label: str, quiet: bool = False
) -> tuple[list[LiveOutcome], float]:
    """``sessions`` agents holding conversations back to back until ``duration_s`` has passed."""
    outcomes: list[LiveOutcome] = []
    started = time.monotonic()
    deadline = started + duration_s
    counter = iter(range(10**9))

    async def agent() -> None:
        while time.monotonic() < deadline:
            outcome = await _conversation(target, next(counter), chars_per_s)
            outcomes.append(outcome)
            # A caller listens in real time: the next turn starts when this one has been heard. A refused
            # or failed one waits its Retry-After (or a second) rather than hammer the endpoint.
            until = outcome.heard_at if outcome.ok else time.monotonic() + (outcome.retry_after_s or 1.0)
            await asyncio.sleep(max(0.0, min(until, deadline) - time.monotonic()))

    async def progress() -> None:
        while True:
            await asyncio.sleep(1.0)
            stalled = sum(1 for o in outcomes if o.stall_s > 0)
            print(f"\r{label}: {len(outcomes)} sessions, {stalled} stalled", end="", file=sys.stderr, flush=True)

    shown = None if quiet else asyncio.ensure_future(progress())
    try:
        await asyncio.gather(*(agent() for _ in range(sessions)))
    finally:
        if shown is not None:
            shown.cancel()
            print(file=sys.stderr)
    return outcomes, time.monotonic() - started


def summarize_live(system: str, outcomes: list[LiveOutcome], wall_s: float, *, sessions: int) -> dict[str, Any]:
    """One results row for a run of ``sessions`` concurrent conversations."""
    good = [o for o in outcomes if o.ok]
    ttfa = [o.ttfa_s * 1000 for o in good if o.ttfa_s is not None]
    errors = Counter(str(o.close_code) for o in outcomes if not o.ok)
    return {
        "system": system,
        "mode": "live",
        "concurrency": sessions,
        "requests": len(outcomes),
        "errors": sum(errors.values()),
        "errors_by_close_code": dict(sorted(errors.items())) or None,
        "throughput_audio_s_per_s": round(sum(o.audio_s for o in good) / wall_s, 3) if wall_s > 0 else 0.0,
        "chars_per_s": round(sum(o.chars for o in good) / wall_s, 1) if wall_s > 0 else 0.0,
        "ttfa_p50_ms": round(float(np.percentile(ttfa, 50)), 1) if ttfa else None,
        "ttfa_p99_ms": round(float(np.percentile(ttfa, 99)), 1) if ttfa else None,
        "stalled_sessions": sum(1 for o in good if o.stall_s > 0),
        "stall_s": round(sum(o.stall_s for o in good), 3),
    }
