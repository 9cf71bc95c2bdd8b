"""Small helpers shared by the in-process tests."""

from __future__ import annotations

import asyncio
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
