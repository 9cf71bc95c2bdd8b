"""Work handed off the event loop: it runs on another thread, and its result or error comes back."""

from __future__ import annotations

import threading

import pytest

from inference.offload import off_loop


async def test_the_work_runs_on_another_thread_and_its_result_comes_back() -> None:
    loop_thread = threading.get_ident()
    ran_on, value = await off_loop(lambda a, b: (threading.get_ident(), a + b), 2, 3)
    assert ran_on != loop_thread
    assert value == 5


async def test_an_error_in_the_work_is_raised_to_the_caller() -> None:
    def fails(text: str) -> None:
        raise ValueError(text)

    with pytest.raises(ValueError, match="no good"):
        await off_loop(fails, "no good")
