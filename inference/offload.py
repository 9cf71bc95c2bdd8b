"""Work handed from the event loop to a worker thread, at the least cost to the loop.

``anyio.to_thread.run_sync`` costs the loop about twice what ``loop.run_in_executor`` does (a capacity
limiter, a cancel scope and a task-state check around the same hand-off): 76-97 against 38-42 us of the
loop's CPU a call, 16 callers at once, on a 2-core AMD EPYC VM. On the request path, where a busy server
hands each request's text to a thread, ``benchmarks/loop_cost.py`` gave 0.93x the loop's CPU a request and
1.06x the requests a second over 10 alternating runs of each (two sets, 0.98x and 1.12x: a noisy VM).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

__all__ = ["off_loop"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def off_loop(function: Callable[[*Ts], T], *args: *Ts) -> T:
    """``function(*args)`` in the running loop's default executor (its own per loop, so per process).

    If the caller is cancelled first, the call is dropped if it has not started, and otherwise runs to its
    end with its result dropped: only work whose effects nobody but the caller sees (preparing text,
    encoding audio) belongs here.
    """
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
