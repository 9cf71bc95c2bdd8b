"""Small helpers shared by the in-process tests."""

from __future__ import annotations

import asyncio
import io
from typing import Any


async def ping_after_loading(client: Any, timeout_s: float = 30.0) -> Any:
    """Poll ``/ping`` until it stops answering 204 (loading) and return that answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        response = await client.get("/ping")
        if response.status_code != 204 or loop.time() > deadline:
            return response
        await asyncio.sleep(0.01)


def decoded_seconds(data: bytes, fmt: str, rate: int) -> float:
    """Duration of encoded audio, decoded with PyAV (raw PCM: by its byte count)."""
    import av

    if fmt == "pcm":
        return len(data) / 2 / rate
    samples, sample_rate = 0, rate
    # Raw G.711 has no header: FFmpeg's mulaw/alaw demuxers are told the rate.
    raw = {"format": fmt, "options": {"sample_rate": str(rate)}} if fmt in ("mulaw", "alaw") else {}
    with av.open(io.BytesIO(data), **raw) as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            sample_rate = frame.sample_rate
    return samples / sample_rate
