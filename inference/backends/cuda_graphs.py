"""CUDA graphs over bucketed shapes: a function of tensors replayed instead of launched op by op.

On a GPU the model thread's Python is the bottleneck the H200 runs showed: a VITS batch makes ~1,300 torch
operations (counted on CPU; most launch a kernel), each made in Python, holding the interpreter the event
loop needs too (``benchmarks/loop_cost.py --launches`` emulates it: on a 2-core AMD EPYC VM, 10x fewer
launches gave ~1.45x the requests a second).
A CUDA graph records a function's kernels once per input shape and replays them in one call. VITS graphs
its text side before the batch's one host sync and its noise, flow and vocoder after it (``VitsBackend``).

``GraphedCall`` keys graphs by a caller-given hashable (the shapes, and flags that change the work: the
function given with a key must always do the same work for it), copies each call's inputs into the graph's
static input tensors, replays, and returns the graph's static output tensors. Those are overwritten by the
next replay of the same graph, so a caller must consume them (enqueue its reads on the same stream) before
calling with that key again, as a batch does. All graphs share one memory pool (outputs stay allocated,
temporaries are shared), which is safe because they are replayed one at a time, on one stream, by one thread.

The first call of a shape runs the function twice eagerly (lazy caches, cuDNN and cuBLAS choices) and then
captures it: that call costs about three forward passes. Past ``max_graphs`` shapes, or after a capture
fails (an operation that cannot be captured), calls run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

__all__ = ["GraphedCall", "padded_rows", "row_bucket"]

log = logging.getLogger(__name__)

Inputs = Sequence[torch.Tensor | None]
Fn = Callable[..., tuple[torch.Tensor, ...]]


class _Graph:
    __slots__ = ("graph", "inputs", "outputs")

    def __init__(self, graph: Any, inputs: tuple[torch.Tensor | None, ...], outputs: tuple[torch.Tensor, ...]) -> None:
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs


class GraphedCall:
    """``fn(*inputs) -> tuple of tensors`` on CUDA, replayed from a graph per key (see the module)."""

    #: Graphs are CUDA's; a subclass that records something else may run elsewhere (tests do, on CPU).
    needs_cuda = True

    def __init__(self, device: torch.device, *, max_graphs: int = 256) -> None:
        if self.needs_cuda and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.device = device
        self.max_graphs = max_graphs
        self.enabled = True
        self._graphs: dict[Hashable, _Graph] = {}
        self._pool: Any = None
        self._stream: Any = None

    @property
    def graph_count(self) -> int:
        """Graphs captured so far."""
        return len(self._graphs)

    def __call__(self, key: Hashable, fn: Fn, inputs: Inputs) -> tuple[torch.Tensor, ...]:
        entry = self._graphs.get(key)
        if entry is None:
            if not self.enabled or len(self._graphs) >= self.max_graphs:
                return fn(*inputs)
            entry = self._capture(key, fn, inputs)
            if entry is None:
                return fn(*inputs)
        for static, given in zip(entry.inputs, inputs, strict=True):
            if static is not None and given is not None:
                static.copy_(given, non_blocking=True)
        entry.graph.replay()
        return entry.outputs

    def _capture(self, key: Hashable, fn: Fn, inputs: Inputs) -> _Graph | None:
        static = tuple(None if t is None else t.clone() for t in inputs)
        try:
            graph, outputs = self._record(fn, static)
        except RuntimeError as exc:  # an operation that cannot be captured: eager from now on, and say so
            self.enabled = False
            log.warning("CUDA graph capture failed for %r, running eagerly from now on: %s", key, exc)
            return None
        entry = _Graph(graph, static, tuple(outputs))
        self._graphs[key] = entry
        log.debug("captured a CUDA graph for %r (%d so far)", key, len(self._graphs))
        return entry

    def _record(self, fn: Fn, static: tuple[torch.Tensor | None, ...]) -> tuple[Any, tuple[torch.Tensor, ...]]:
        """Capture ``fn(*static)``: (an object whose ``replay()`` reruns its kernels, its output tensors)."""
        cuda: Any = torch.cuda
        if self._pool is None:
            self._pool = cuda.graph_pool_handle()
            self._stream = cuda.Stream(self.device)
        current = cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        with cuda.stream(self._stream):
            for _ in range(2):  # warm-up off the graph: lazy caches, library handles, algorithm choices
                fn(*static)
        current.wait_stream(self._stream)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
            outputs = fn(*static)
        return graph, tuple(outputs)


def padded_rows(tensor: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """``tensor`` with its first row repeated at the end up to ``rows`` rows (a real row, so every value the
    padding rows produce is finite; rows never read each other, and their results are dropped)."""
    if tensor is None or tensor.shape[0] == rows:
        return tensor
    extra = tensor[:1].expand(rows - tensor.shape[0], *tensor.shape[1:])
    return torch.cat((tensor, extra))


def row_bucket(rows: int) -> int:
    """Batch rows rounded up for a graph: 1, 2, 4, 8, then multiples of 8 (at most 7 padded rows)."""
    if rows <= 8:
        return 1 << (rows - 1).bit_length()
    return -(-rows // 8) * 8
