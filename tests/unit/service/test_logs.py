"""The batched log handler: lines come out in order, formatted, from a writer thread; warnings at once."""

from __future__ import annotations

import io
import logging
import os
import time

import pytest

from service.logs import BatchedStreamHandler


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(f"chorus.test.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def _wait_for(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_info_lines_wait_for_the_batch_and_come_out_in_order_formatted() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream=stream, interval_s=60)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = _logger(handler, "order")
    for i in range(5):
        log.info("line %d", i)
    assert stream.getvalue() == ""  # the writer sleeps for a minute; the caller wrote nothing itself
    handler.flush()
    assert stream.getvalue().splitlines() == [f"INFO chorus.test.order: line {i}" for i in range(5)]
    handler.close()


def test_a_warning_wakes_the_writer_at_once() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream=stream, interval_s=60)
    log = _logger(handler, "warning")
    log.info("before")
    log.warning("look")
    assert _wait_for(lambda: "look" in stream.getvalue())  # not a minute later
    assert stream.getvalue().splitlines() == ["before", "look"]
    handler.close()


def test_arguments_are_read_when_the_line_is_logged_not_when_it_is_written() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream=stream, interval_s=60)
    log = _logger(handler, "args")
    state = ["loading"]
    log.info("state %s", state)
    state[0] = "ready"
    handler.close()  # close writes what waits
    assert stream.getvalue() == "state ['loading']\n"
    log.info("after close")
    handler.flush()
    assert "after close" not in stream.getvalue()


def test_past_the_bound_lines_are_dropped_and_counted() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream=stream, interval_s=60, max_pending=3)
    log = _logger(handler, "bound")
    for i in range(5):
        log.info("line %d", i)
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[3] == "(chorus: 2 log records dropped: the log stream could not keep up)"
    handler.close()


def test_a_broken_stream_does_not_raise_into_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    stream.close()
    handler = BatchedStreamHandler(stream=stream, interval_s=60)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    _logger(handler, "broken").info("lost")
    handler.flush()
    assert [r.getMessage() for r in reported] == ["lost"]
    handler.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_lines_not_its_parents() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream=stream, interval_s=60)
    log = _logger(handler, "fork")
    log.info("parent's")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the parent's waiting line is the parent's to write
        log.warning("child's")
        ok = _wait_for(lambda: "child's" in stream.getvalue(), 5.0)  # its own writer thread started
        os.write(write_end, stream.getvalue().encode() if ok else b"timeout")
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        written_in_child = pipe.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0
    assert written_in_child == "child's\n"
    handler.flush()
    assert stream.getvalue() == "parent's\n"
    handler.close()


def test_the_default_stream_is_stderr_when_the_batch_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    handler = BatchedStreamHandler(interval_s=60)
    _logger(handler, "stderr").info("to stderr")
    handler.flush()
    assert capsys.readouterr().err == "to stderr\n"
    handler.close()
