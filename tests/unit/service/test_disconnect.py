"""``unless_disconnected``: the work is cancelled as soon as the client is gone, however ``receive`` says so."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from service.errors import ClientDisconnectedError
from service.synthesis import unless_disconnected


class _Client:
    def __init__(self, messages: list[dict[str, Any]] | None = None, failure: BaseException | None = None) -> None:
        self.messages = messages or []
        self.failure = failure

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        if self.messages:
            return self.messages.pop(0)
        if self.failure is not None:
            raise self.failure
        await asyncio.Event().wait()  # nothing more to say: stays connected
        raise AssertionError("unreachable")


async def _forever(cancelled: list[bool]) -> str:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.append(True)
        raise
    return "never"


async def test_the_work_answers_when_the_client_stays() -> None:
    async def quick() -> str:
        return "audio"

    assert await unless_disconnected(_Client(), quick()) == "audio"  # type: ignore[arg-type]


async def test_a_disconnect_cancels_the_work() -> None:
    cancelled: list[bool] = []
    client = _Client([{"type": "http.request", "body": b""}, {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnectedError):
        await unless_disconnected(client, _forever(cancelled))  # type: ignore[arg-type]
    assert cancelled == [True]


async def test_a_failing_receive_counts_as_gone_and_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    cancelled: list[bool] = []

    async def call() -> str:
        try:
            return await unless_disconnected(_Client(failure=OSError("reset")), _forever(cancelled))  # type: ignore[arg-type]
        except ClientDisconnectedError:
            return "gone"  # no traceback kept: the watcher task is collected below, and must not log

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert await call() == "gone"
        gc.collect()
        await asyncio.sleep(0)
    assert cancelled == [True]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_the_works_own_error_comes_through() -> None:
    async def broken() -> str:
        raise ValueError("bad text")

    with pytest.raises(ValueError, match="bad text"):
        await unless_disconnected(_Client(), broken())  # type: ignore[arg-type]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    # Shutdown or a timeout cancelling the handler is not the client leaving: no ClientDisconnectedError,
    # and the work is cancelled with it.
    cancelled: list[bool] = []
    task = asyncio.ensure_future(unless_disconnected(_Client(), _forever(cancelled)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]
