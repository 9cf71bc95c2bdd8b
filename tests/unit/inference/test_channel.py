"""The model process's channel: objects with their arrays' bytes out of band, a message sent in one call and
received in two."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from inference.backends.base import SynthesisJob, SynthesisParams, Voiced
from inference.backends.remote import Channel


class CountingSocket:
    """A socket that counts its ``recv_into`` and send calls; ``trickle`` bytes at most a send, if given."""

    def __init__(self, sock: socket.socket, trickle: int | None = None) -> None:
        self.sock = sock
        self.trickle = trickle
        self.recv_into_calls = 0
        self.send_calls = 0

    def recv_into(self, *args: Any) -> int:
        self.recv_into_calls += 1
        return self.sock.recv_into(*args)

    def sendmsg(self, parts: list[Any]) -> int:
        self.send_calls += 1
        if self.trickle is None:
            return self.sock.sendmsg(parts)
        return self.sock.send(b"".join(bytes(part) for part in parts)[: self.trickle])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel, CountingSocket]]:
    left, right = socket.socketpair()
    counting = CountingSocket(right)
    sender, receiver = Channel(left), Channel(counting)  # type: ignore[arg-type]
    yield sender, receiver, counting
    sender.close()
    receiver.close()


def test_a_message_of_many_arrays_is_sent_in_one_call() -> None:
    left, right = socket.socketpair()
    counting = CountingSocket(left)
    sender, receiver = Channel(counting), Channel(right)  # type: ignore[arg-type]
    jobs = [SynthesisJob(np.arange(40 + row, dtype=np.int64)) for row in range(64)]  # a batch's token ids
    got = _sent(sender, receiver, ("run", jobs))
    assert counting.send_calls == 1  # not one a job: each call lets go of the interpreter lock
    for sent, came in zip(jobs, got[1], strict=True):
        np.testing.assert_array_equal(came.token_ids, sent.token_ids)
    sender.close()
    receiver.close()


def test_a_send_cut_short_goes_on_where_it_stopped() -> None:
    left, right = socket.socketpair()
    trickling = CountingSocket(left, trickle=1000)
    sender, receiver = Channel(trickling), Channel(right)  # type: ignore[arg-type]
    rows = [np.arange(300 + row, dtype=np.float32) for row in range(8)]
    got = _sent(sender, receiver, ("ok", rows))
    assert trickling.send_calls > 8
    for sent, came in zip(rows, got[1], strict=True):
        np.testing.assert_array_equal(came, sent)
    sender.close()
    receiver.close()


def _sent(sender: Channel, receiver: Channel, obj: Any) -> Any:
    """``obj`` through the channel, sent from another thread (a big one fills the socket's buffer)."""
    thread = threading.Thread(target=sender.send, args=(obj,))
    thread.start()
    got = receiver.recv()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return got


def test_objects_and_their_arrays_arrive_equal_writable_aligned_and_apart(
    pair: tuple[Channel, Channel, CountingSocket],
) -> None:
    sender, receiver, _ = pair
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n).astype(np.float32) for n in (0, 1, 22050 * 3)]
    voiced = [Voiced(a, np.arange(3, dtype=np.int64)) for a in audio]
    strided = np.arange(20, dtype=np.float32)[::2]  # not contiguous: pickled in band
    job = SynthesisJob(np.array([1, 2, 3], np.int64), SynthesisParams(seed=4), model="m")
    got = _sent(sender, receiver, ("ok", voiced, {"reserved": 7}, 3, strided, [job], None))
    status, got_voiced, memory, rows, got_strided, jobs, nothing = got
    assert (status, memory, rows, nothing) == ("ok", {"reserved": 7}, 3, None)
    for sent, came in zip(voiced, got_voiced, strict=True):
        assert came.audio.dtype == np.float32
        np.testing.assert_array_equal(came.audio, sent.audio)
        np.testing.assert_array_equal(came.token_samples, sent.token_samples)
        assert came.audio.flags.writeable  # the edge fade works on it in place
        assert came.audio.ctypes.data % 16 == 0
        assert came.token_samples.ctypes.data % 16 == 0
    np.testing.assert_array_equal(got_strided, strided)
    np.testing.assert_array_equal(jobs[0].token_ids, job.token_ids)
    assert (jobs[0].params, jobs[0].model) == (job.params, job.model)
    long = got_voiced[2].audio
    long[:] = 0.5  # writing one array changes no other
    assert not np.shares_memory(long, got_voiced[1].audio)
    assert got_voiced[1].audio[0] == voiced[1].audio[0]


def test_a_message_is_received_in_two_calls_not_a_socket_buffer_or_an_array_at_a_time(
    pair: tuple[Channel, Channel, CountingSocket],
) -> None:
    sender, receiver, counting = pair
    rows = [np.full(66_000 + row, row, np.float32) for row in range(64)]  # 17 MB: dozens of socket buffers
    got = _sent(sender, receiver, rows)
    for sent, came in zip(rows, got, strict=True):
        np.testing.assert_array_equal(came, sent)
    assert counting.recv_into_calls == 2  # the frame, then the rest


def test_messages_keep_their_order_and_a_closed_end_reads_as_eof(
    pair: tuple[Channel, Channel, CountingSocket],
) -> None:
    sender, receiver, _ = pair
    for index in range(3):
        sender.send(("run", np.full(5, index, np.int64)))
    for index in range(3):
        command, array = receiver.recv()
        assert command == "run"
        np.testing.assert_array_equal(array, np.full(5, index))
    sender.close()
    with pytest.raises(EOFError):
        receiver.recv()
