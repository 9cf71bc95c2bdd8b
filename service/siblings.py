"""Readiness across the server's processes (``CHORUS_PROCESSES`` > 1).

granian runs each process with its own model and batcher behind one listening socket, and a health check
lands on any one of them. The server is ready only when every process is: each marks itself ready with a
file named by its pid in a folder named by their common parent (granian's supervisor), and /ping counts
the marks of processes still alive. A process that dies and is started again marks itself afresh.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["Siblings"]


class Siblings:
    """This process's view of its ``expected`` sibling processes' readiness."""

    def __init__(self, expected: int, directory: Path | None = None, pid: int | None = None) -> None:
        self.expected = expected
        self.directory = directory or Path(tempfile.gettempdir()) / f"chorus-ready-{os.getppid()}"
        self.pid = os.getpid() if pid is None else pid
        self._all_seen = False

    def mark_ready(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / str(self.pid)).touch()

    def unmark(self) -> None:
        """Take this process's mark away; the last one out removes the folder with dead processes' marks."""
        with contextlib.suppress(OSError):
            (self.directory / str(self.pid)).unlink()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                if not (entry.name.isdigit() and _alive(int(entry.name))):
                    Path(entry.path).unlink()
            self.directory.rmdir()

    def ready(self) -> int:
        """How many sibling processes (this one included) are alive and marked ready."""
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except OSError:
            return 0
        return sum(1 for name in names if name.isdigit() and _alive(int(name)))

    def all_ready(self) -> bool:
        """Whether every expected process is ready; once they all were, a restarting one is not waited for
        (its own requests get 503 until it is ready, and the platform keeps sending to the others)."""
        if not self._all_seen:
            self._all_seen = self.ready() >= self.expected
        return self._all_seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
