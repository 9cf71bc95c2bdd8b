"""The model in a process of its own (``CHORUS_MODEL_PROCESS=on``).

On a GPU one Python interpreter runs out before the device does: the model thread launches every kernel
from Python while the event loop parses requests, prepares text and encodes audio, and they share one
interpreter lock (see the README's GPU figures). Here the batcher stays where it is and hands each batch
to a child process that holds the model on its device and does nothing else; the parent keeps a CPU copy
of the same checkpoint for what needs no device (``prepare``, ``unsayable``, ``batch_key``), so text is
prepared beside the batches instead of between them.

One batch crosses the socket at a time (the batcher runs one at a time): the jobs go over pickled, the
audio comes back as arrays (``Channel``: the arrays' bytes travel beside the pickle, a message is sent in
one call and received in two, each letting go of the interpreter lock until it is done). An exception in
the child comes back and is raised here (a CUDA out-of-memory keeps its message, so the batcher still
halves its batches); if the child dies, every later batch fails at once and ``alive`` turns false
(``/ping`` answers 503, so the platform replaces the worker).

With several server processes (``CHORUS_PROCESSES``) the model process is shared: ``chorus serve`` starts
one ``ModelServer`` per model before granian's workers, and each worker connects to it (``connect``)
instead of starting its own. The server runs one batch at a time and merges the batches that wait for it
(up to ``merge_rows`` rows that share a batch key) into one forward pass, so every worker's event loop
feeds one model on one device: many interpreters for the HTTP side, one CUDA context, full batches.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import replace
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.backends.base import Backend, ModelInfo, SynthesisJob, SynthesisParams, Voiced, timed_synthesis
from inference.errors import ModelLoadError

__all__ = ["Channel", "ModelProcess", "ModelProcessError", "ModelServer"]

log = logging.getLogger(__name__)


class ModelProcessError(RuntimeError):
    """The model's process stopped; nothing more can be synthesized here."""


_FRAME = struct.Struct("<QQI")  # the bytes after the frame, the pickle's length, how many buffers
_ALIGN = 64  # the pickle and each buffer start at a multiple of this in the message
_MOST_PARTS = 512  # buffers a sendmsg call is given (the system's limit is at least 1024)


def _padded(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


class Channel:
    """Objects over a connected stream socket, the bytes of their arrays out of band (pickle protocol 5).

    ``multiprocessing.Connection`` reads a message a socket buffer at a time (a few hundred KB), taking the
    interpreter lock back after each read and copying it twice; a batch's audio is megabytes, and in the
    server process a busy event loop holds the lock, so each take-back may wait out a switch interval
    (5 ms). Here a message is its frame, then one block holding the buffers' sizes, the pickle (which
    carries only the arrays' shapes) and every array's bytes; the block is received in one ``recv_into``
    (``MSG_WAITALL``: the lock is let go of until it is all in), so a message costs two take-backs whatever
    its size; it is sent in one call too. The arrays that come out are views of that block (aligned,
    writable, none overlapping another), so a batch's block lives as long as any of its arrays.

    One thread may send while another receives; two senders (or two receivers) must take turns.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    @classmethod
    def adopt(cls, connection: Connection) -> Channel:
        """A channel over ``connection``'s socket (which it takes over: the connection is closed)."""
        sock = socket.socket(fileno=os.dup(connection.fileno()))
        connection.close()
        return cls(sock)

    def send(self, obj: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [buffer.raw() for buffer in buffers]
        sizes = struct.pack(f"<{len(raws)}Q", *(raw.nbytes for raw in raws))
        before = sizes + head
        parts: list[bytes | memoryview] = [before, bytes(_padded(len(before)) - len(before))]
        for raw in raws:
            parts += (raw, bytes(_padded(raw.nbytes) - raw.nbytes))
        parts = [part for part in parts if len(part)]
        parts.insert(0, _FRAME.pack(sum(len(part) for part in parts), len(head), len(raws)))
        # One call for the whole message (it blocks until all is sent): a call per array would let go of
        # the interpreter lock, and have to win it back from a busy event loop, once per array.
        while parts:
            sent = self._socket.sendmsg(parts[:_MOST_PARTS])
            while parts and sent >= len(parts[0]):
                sent -= len(parts.pop(0))
            if sent:  # cut short (a signal): the rest of this part first
                parts[0] = memoryview(parts[0])[sent:]

    def recv(self) -> Any:
        """The next object; ``EOFError`` once the other end has closed."""
        length, head_bytes, count = _FRAME.unpack(self._exactly(_FRAME.size))
        block = self._exactly(length)
        sizes = struct.unpack_from(f"<{count}Q", block)
        head = block[8 * count : 8 * count + head_bytes]
        at, buffers = _padded(8 * count + head_bytes), []
        for size in sizes:
            buffers.append(block[at : at + size])
            at += _padded(size)
        return pickle.loads(head, buffers=buffers)  # noqa: S301 (our own process's objects)

    def _exactly(self, size: int) -> memoryview:
        view = np.empty(size, np.uint8).data  # not zeroed: every byte is written by the socket
        done = 0
        while done < size:  # one call unless a signal cuts it short
            got = self._socket.recv_into(view[done:], size - done, socket.MSG_WAITALL)
            if got == 0:
                raise EOFError("the other end closed the channel")
            done += got
        return view

    def close(self) -> None:
        self._socket.close()


class ModelProcess:
    """A backend whose batches run in a child process; everything else runs on a local CPU copy."""

    def __init__(self, local: Backend, process: Any, connection: Channel, info: ModelInfo) -> None:
        #: The child this process started, or None when it shares a ``ModelServer`` started by ``chorus serve``.
        self._process = process
        #: Rows in the forward pass that ran this process's last batch (more than its own when merged).
        self.last_rows = 0
        self._local = local
        self._connection = connection
        self._info = info
        self._lock = threading.Lock()
        self._memory: dict[str, int] = {}
        self._dead: str | None = None

    @classmethod
    def start(cls, spec: Any) -> ModelProcess:
        """Load ``spec`` (an ``inference.backends.ModelSpec``) on the CPU here for text preparation, then on
        its device in a fresh process (spawned: CUDA cannot follow a fork), warmed up before this returns."""
        from inference.backends import load_backend

        # First here: a Piper voice is converted into the cache once, before the child reads it.
        local = load_backend(replace(spec, device="cpu", dtype="fp32", batch_decoder=None, cuda_graphs=False))
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(spec, child, None, (1, 1)), name="chorus-model", daemon=True)
        process.start()
        child.close()
        try:
            backend = cls._handshake(local, process, Channel.adopt(parent))
        except ModelLoadError:
            process.join(timeout=30)
            raise
        log.info("model process %d serves %s on %s", process.pid, backend.info.name, backend.info.device)
        return backend

    @classmethod
    def connect(cls, spec: Any, address: str, timeout_s: float = 60.0) -> ModelProcess:
        """Load ``spec`` on the CPU here (text preparation) and connect to the ``ModelServer`` listening at
        ``address``; returns once it has loaded its model (it may still be loading when this starts)."""
        from inference.backends import load_backend

        local = load_backend(replace(spec, device="cpu", dtype="fp32", batch_decoder=None, cuda_graphs=False))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                channel = Channel.adopt(Client(address))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:  # not listening yet
                if time.monotonic() > deadline:
                    raise ModelLoadError(f"no model process listens at {address}") from exc
                time.sleep(0.1)
        try:
            backend = cls._handshake(local, None, channel)
        except ModelLoadError:
            channel.close()
            raise
        log.info("sharing the model process at %s: %s on %s", address, backend.info.name, backend.info.device)
        return backend

    @classmethod
    def _handshake(cls, local: Backend, process: Any, connection: Channel) -> ModelProcess:
        try:
            status, payload = connection.recv()
        except (EOFError, OSError) as exc:
            code = "" if process is None else f" (exit code {process.exitcode})"
            raise ModelLoadError(f"the model process exited while loading{code}") from exc
        if status != "ready":
            raise ModelLoadError(f"the model process could not load the model: {payload}")
        info, memory = payload
        backend = cls(local, process, connection, info)
        backend._memory = memory
        return backend

    # ------------------------------------------------------------------ what runs here

    @property
    def info(self) -> ModelInfo:
        """The child's model as it runs there (its device and dtype)."""
        return self._info

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        return self._local.prepare(text, params)

    def unsayable(self, text: str) -> str:
        return self._local.unsayable(text)

    def batch_key(self, job: SynthesisJob) -> Hashable:
        return self._local.batch_key(job)

    def warmup(self) -> None:
        """The child warmed its model up before it said it was ready."""

    def device_memory(self) -> dict[str, int]:
        """The child's device memory as of its last batch."""
        return dict(self._memory)

    @property
    def alive(self) -> bool:
        return self._dead is None

    @property
    def pid(self) -> int | None:
        """The child's pid, when this process started it."""
        return None if self._process is None else int(self._process.pid)

    # ------------------------------------------------------------------ what runs there

    def synthesize_timed(self, jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        with self._lock:
            if self._dead is not None:
                raise ModelProcessError(self._dead)
            try:
                self._connection.send(("run", list(jobs)))
                status, payload, memory, rows = self._connection.recv()
            except (EOFError, OSError) as exc:
                code = "" if self._process is None else f" (exit code {self._process.exitcode})"
                self._dead = f"the model process stopped{code}"
                log.error("%s", self._dead)
                raise ModelProcessError(self._dead) from exc
        self._memory, self.last_rows = memory, rows
        if status == "error":
            raise payload
        return payload  # type: ignore[no-any-return]

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        return [voiced.audio for voiced in self.synthesize_timed(jobs)]

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the child to exit and wait for it (then stop it); a shared one is only let go of."""
        with self._lock:
            if self._dead is None and self._process is not None:
                with contextlib.suppress(OSError):
                    self._connection.send(("stop", None))
            self._dead = "the model process was closed"
        if self._process is None:
            self._connection.close()
            return
        self._process.join(timeout=timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=timeout_s)
        self._connection.close()


class ModelServer:
    """One model process for all of ``chorus serve``'s worker processes (started by its supervisor)."""

    def __init__(self, process: Any, address: str) -> None:
        self.process = process
        self.address = address

    @classmethod
    def start(cls, spec: Any, address: str, merge_rows: tuple[int, int]) -> ModelServer:
        """Spawn the server; it listens at ``address`` at once and loads the model in the background.
        ``merge_rows``: the most rows of merged batches on a GPU and on the CPU."""
        context = multiprocessing.get_context("spawn")
        process = context.Process(
            target=_serve, args=(spec, None, address, merge_rows), name="chorus-model-server", daemon=True
        )
        process.start()
        return cls(process, address)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (the workers' connections see it go)."""
        self.process.terminate()
        self.process.join(timeout=timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=timeout_s)


def _serve(spec: Any, parent: Connection | None, address: str | None, merge_rows: tuple[int, int]) -> None:
    """The model's process: load and warm the model, then run batches until told to stop (``parent``: the
    one process that started it) or killed (``address``: a server shared by every worker, whose waiting
    batches are merged up to ``merge_rows`` rows: on a GPU, on the CPU)."""
    from inference.backends import load_backend

    connection = None if parent is None else Channel.adopt(parent)
    requests: queue.Queue[tuple[Channel, Any]] = queue.Queue()
    loaded = threading.Event()
    hello: list[Any] = []
    if address is not None:
        listener = Listener(address)  # at once: workers may connect while the model loads
        threading.Thread(target=_accept, args=(listener, requests, loaded, hello), daemon=True).start()
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        backend = load_backend(spec)
        backend.warmup()
        run = timed_synthesis(backend)
    except Exception as exc:
        hello.append(("error", f"{type(exc).__name__}: {exc}"))
        loaded.set()
        if connection is not None:
            connection.send(hello[0])
            return
        threading.Event().wait()  # a shared server answers every worker with the failure until stopped
    hello.append(("ready", (backend.info, _memory(backend))))
    most_rows = merge_rows[0] if backend.info.device.startswith("cuda") else merge_rows[1]
    loaded.set()
    if connection is not None:
        connection.send(hello[0])
        threading.Thread(target=_read, args=(connection, requests, True), daemon=True).start()
    waiting: deque[tuple[Channel, Any]] = deque()
    while True:
        if not waiting:
            waiting.append(requests.get())
        with contextlib.suppress(queue.Empty):
            while True:
                waiting.append(requests.get_nowait())
        first_conn, first = waiting.popleft()
        if first is None:  # the parent that started it said stop (or went away)
            return
        group = [(first_conn, first)]
        key = backend.batch_key(first[0]) if first else None
        rows = len(first)
        kept: deque[tuple[Channel, Any]] = deque()
        for conn, jobs in waiting:
            if jobs and rows + len(jobs) <= most_rows and backend.batch_key(jobs[0]) == key:
                group.append((conn, jobs))
                rows += len(jobs)
            else:
                kept.append((conn, jobs))  # for the next pass, in the order they came
        waiting = kept
        for conn, reply in _run_group(run, backend, group):
            with contextlib.suppress(OSError):  # a worker that went away misses its answer
                conn.send(reply)


def _run_group(
    run: Any, backend: Backend, group: list[tuple[Channel, list[SynthesisJob]]]
) -> list[tuple[Channel, tuple[str, Any, dict[str, int], int]]]:
    """One forward pass for the group's batches; if it fails, each batch alone (so a failure is its own)."""
    rows = sum(len(jobs) for _, jobs in group)
    if len(group) > 1:
        try:
            voiced = run([job for _, jobs in group for job in jobs])
        except Exception:
            return [reply for item in group for reply in _run_group(run, backend, [item])]
        memory, out, start = _memory(backend), [], 0
        for conn, jobs in group:
            out.append((conn, ("ok", voiced[start : start + len(jobs)], memory, rows)))
            start += len(jobs)
        return out
    conn, jobs = group[0]
    try:
        return [(conn, ("ok", run(jobs), _memory(backend), rows))]
    except Exception as exc:
        return [(conn, ("error", _portable(exc), _memory(backend), rows))]


def _accept(
    listener: Listener, requests: queue.Queue[tuple[Channel, Any]], loaded: threading.Event, hello: list[Any]
) -> None:
    while True:
        try:
            connection = Channel.adopt(listener.accept())
        except OSError:
            continue
        threading.Thread(target=_greet_and_read, args=(connection, requests, loaded, hello), daemon=True).start()


def _greet_and_read(
    connection: Channel, requests: queue.Queue[tuple[Channel, Any]], loaded: threading.Event, hello: list[Any]
) -> None:
    loaded.wait()
    with contextlib.suppress(OSError):
        connection.send(hello[0])  # nothing else is sent on it before its first batch
    if hello[0][0] == "ready":
        _read(connection, requests, False)


def _read(connection: Channel, requests: queue.Queue[tuple[Channel, Any]], owner: bool) -> None:
    """Queue every batch a connection sends; the owner's ``stop`` (or its going away) stops the server."""
    while True:
        try:
            command, jobs = connection.recv()
        except (EOFError, OSError):
            command, jobs = "stop", None
        if command == "stop":
            if owner:
                requests.put((connection, None))
            return
        requests.put((connection, jobs))


def _exit_with_parent(parent: int) -> None:
    """A shared server outlives no supervisor, even one killed outright."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _memory(backend: Backend) -> dict[str, int]:
    device_memory = getattr(backend, "device_memory", None)
    return dict(device_memory()) if callable(device_memory) else {}


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling as it is, else a RuntimeError naming its type and message (a CUDA
    out-of-memory error keeps "out of memory" in it, which is what the batcher looks for)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, round-tripped)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
