"""The model in a process of its own (``CHORUS_MODEL_PROCESS=on``).

On a GPU one Python interpreter runs out before the device does: the model thread launches every kernel
from Python while the event loop parses requests, prepares text and encodes audio, and they share one
interpreter lock (see the README's GPU figures). Here the batcher stays where it is and hands each batch
to a child process that holds the model on its device and does nothing else; the parent keeps a CPU copy
of the same checkpoint for what needs no device (``prepare``, ``unsayable``, ``batch_key``), so text is
prepared beside the batches instead of between them.

One batch crosses the pipe at a time (the batcher runs one at a time): the jobs go over pickled, the
audio comes back as arrays. An exception in the child comes back and is raised here (a CUDA out-of-memory
keeps its message, so the batcher still halves its batches); if the child dies, every later batch fails at
once and ``alive`` turns false (``/ping`` answers 503, so the platform replaces the worker).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Hashable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.backends.base import Backend, ModelInfo, SynthesisJob, SynthesisParams, Voiced, timed_synthesis
from inference.errors import ModelLoadError

__all__ = ["ModelProcess", "ModelProcessError"]

log = logging.getLogger(__name__)


class ModelProcessError(RuntimeError):
    """The model's process stopped; nothing more can be synthesized here."""


class ModelProcess:
    """A backend whose batches run in a child process; everything else runs on a local CPU copy."""

    def __init__(self, local: Backend, process: Any, connection: Connection, info: ModelInfo) -> None:
        self._local = local
        self._process = process
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
        local = load_backend(replace(spec, device="cpu", dtype="fp32", batch_decoder=None))
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(spec, child), name="chorus-model", daemon=True)
        process.start()
        child.close()
        try:
            status, payload = parent.recv()
        except (EOFError, OSError) as exc:
            process.join(timeout=5)
            raise ModelLoadError(f"the model process exited while loading (exit code {process.exitcode})") from exc
        if status != "ready":
            process.join(timeout=30)
            raise ModelLoadError(f"the model process could not load the model: {payload}")
        info, memory = payload
        backend = cls(local, process, parent, info)
        backend._memory = memory
        log.info("model process %d serves %s on %s", process.pid, info.name, info.device)
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
    def pid(self) -> int:
        return int(self._process.pid)

    # ------------------------------------------------------------------ what runs there

    def synthesize_timed(self, jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        with self._lock:
            if self._dead is not None:
                raise ModelProcessError(self._dead)
            try:
                self._connection.send(("run", list(jobs)))
                status, payload, memory = self._connection.recv()
            except (EOFError, OSError) as exc:
                self._dead = f"the model process stopped (exit code {self._process.exitcode})"
                log.error("%s", self._dead)
                raise ModelProcessError(self._dead) from exc
        self._memory = memory
        if status == "error":
            raise payload
        return payload  # type: ignore[no-any-return]

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        return [voiced.audio for voiced in self.synthesize_timed(jobs)]

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the child to exit and wait for it (then stop it)."""
        with self._lock:
            if self._dead is None:
                with contextlib.suppress(OSError):
                    self._connection.send(("stop", None))
                self._dead = "the model process was closed"
        self._process.join(timeout=timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=timeout_s)
        self._connection.close()


def _serve(spec: Any, connection: Connection) -> None:
    """The child: load and warm the model, then run each batch it is sent until told to stop."""
    from inference.backends import load_backend

    try:
        backend = load_backend(spec)
        backend.warmup()
        run = timed_synthesis(backend)
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", (backend.info, _memory(backend))))
    while True:
        try:
            command, jobs = connection.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if command == "stop":
            return
        try:
            reply: tuple[str, Any, dict[str, int]] = ("ok", run(jobs), _memory(backend))
        except Exception as exc:
            reply = ("error", _portable(exc), _memory(backend))
        connection.send(reply)


def _memory(backend: Backend) -> dict[str, int]:
    device_memory = getattr(backend, "device_memory", None)
    return dict(device_memory()) if callable(device_memory) else {}


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling as it is, else a RuntimeError naming its type and message (a CUDA
    out-of-memory error keeps "out of memory" in it, which is what the batcher looks for)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own object, round-tripped)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
