"""CUDA graphs for VITS (CHORUS_CUDA_GRAPHS): what a CPU can check, and on a GPU the graphs.

On CPU the graphs' plumbing runs under ``ReplayedOnCpu``, which keeps a real graph's one property that
code can get wrong: a replay reruns what was captured, on the captured input tensors, whatever the caller
passes as the function this time. A graphed function that read anything but its inputs, or a key that
missed something that changes the work, would give another batch's audio or stale audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.backends import ModelSpec, load_backend
from inference.backends.base import SynthesisParams
from inference.backends.cuda_graphs import Fn, GraphedCall, padded_rows, row_bucket
from service.settings import Settings
from tests.tiny_model import write_tiny_piper_voice

TEXTS = ["hi", "the quick brown fox jumps over the lazy dog", "a medium length sentence here"]


class _Replay:
    """A captured call: ``replay()`` reruns the function captured on the captured inputs into its outputs."""

    def __init__(self, fn: Fn, inputs: tuple[torch.Tensor | None, ...], outputs: tuple[torch.Tensor, ...]) -> None:
        self.fn, self.inputs, self.outputs = fn, inputs, outputs
        self.replays = 0

    def replay(self) -> None:
        for static, fresh in zip(self.outputs, self.fn(*self.inputs), strict=True):
            static.copy_(fresh)
        self.replays += 1


class ReplayedOnCpu(GraphedCall):
    """``GraphedCall`` with its capture replaced by ``_Replay``: graph semantics for the plumbing, on CPU."""

    needs_cuda = False

    def _record(self, fn: Fn, static: tuple[torch.Tensor | None, ...]) -> tuple[Any, tuple[torch.Tensor, ...]]:
        outputs = tuple(t.clone() for t in fn(*static))
        return _Replay(fn, static, outputs), outputs

    def replays(self) -> int:
        return sum(entry.graph.replays for entry in self._graphs.values())


@pytest.fixture(scope="module")
def tiny_piper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_piper_voice(tmp_path_factory.mktemp("tiny-piper") / "voice")


@pytest.mark.parametrize("model", ["vits", "piper-speakers"])
def test_graphed_batches_replay_each_batch_own_audio(tiny_vits_dir: Path, tiny_piper_dir: Path, model: str) -> None:
    # Both halves graphed (the batched decoder, as on CUDA) against the same model eager. The same batches
    # come round in other row orders (the same buckets, other data in every row) and at temperature 0 (other
    # keys): every row must be its own audio, every time.
    folder = tiny_vits_dir if model == "vits" else tiny_piper_dir
    spec = ModelSpec(model=str(folder), device="cpu", batch_decoder=True)
    eager: Any = load_backend(spec)
    graphed: Any = load_backend(spec)
    graphed._graphs, graphed._tail_graphs = ReplayedOnCpu(graphed.device), ReplayedOnCpu(graphed.device)
    voices = eager.info.voices or (None,)
    jobs = [
        job
        for i, text in enumerate(TEXTS * 2)
        for job in eager.prepare(text, SynthesisParams(seed=i, voice=voices[i % len(voices)]))
    ]
    still = [job for text in TEXTS for job in eager.prepare(text, SynthesisParams(temperature=0.0))]
    batches = [jobs[:3], jobs[2::-1], jobs[1:3] + jobs[:1], jobs[:5], jobs[4::-1], still, still[::-1], jobs[:1]]
    for batch in batches:
        expected, got = eager.synthesize(batch), graphed.synthesize(batch)
        assert [len(a) for a in got] == [len(a) for a in expected]
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert graphed._graphs.replays() >= 4  # replays, not captures only
    assert graphed._tail_graphs.replays() >= 4
    assert graphed._tail_graphs.graph_count >= 3


def test_a_graphed_backend_keeps_its_memory_reserved(tiny_vits_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The graphs' pool stays reserved for good; handing "idle" reserve back after every batch would only
    # free the eager tensors' blocks, to be allocated again by the next batch.
    import inference.backends.device as device_module

    released: list[torch.device] = []
    monkeypatch.setattr(device_module, "release_if_oversized", released.append)
    backend: Any = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu", batch_decoder=True))
    jobs = backend.prepare(TEXTS[1], SynthesisParams(seed=1))
    backend.synthesize(jobs)
    assert released == [backend.device]
    backend._graphs, backend._tail_graphs = ReplayedOnCpu(backend.device), ReplayedOnCpu(backend.device)
    backend.synthesize(jobs)
    assert released == [backend.device]


def test_row_buckets_are_powers_of_two_then_multiples_of_eight() -> None:
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 63, 64)] == [1, 2, 4, 4, 8, 8, 16, 16, 24, 64, 64]
    assert all(row_bucket(n) - n < 8 for n in range(1, 200))


def test_padding_rows_repeats_the_first_row() -> None:
    tensor = torch.arange(6).view(3, 2)
    padded = padded_rows(tensor, 5)
    assert padded is not None
    assert padded.tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]]
    assert padded_rows(tensor, 3) is tensor
    assert padded_rows(None, 5) is None


@pytest.mark.parametrize("temperature", [0.0, 0.667])
def test_rows_padded_to_a_bucket_leave_the_real_rows_as_they_were(tiny_backend: Any, temperature: float) -> None:
    # What the graphed path runs: the text side on a batch padded with copies of its first row. Rows never
    # read each other, so the real rows must come out exactly as unpadded.
    jobs = [job for text in TEXTS for job in tiny_backend.prepare(text, SynthesisParams(seed=5))]
    rows, tokens = len(jobs), max(job.length for job in jobs)
    ids = torch.zeros(rows, tokens, dtype=torch.int64)
    for row, job in enumerate(jobs):
        ids[row, : job.length] = torch.as_tensor(job.token_ids)
    lengths = torch.tensor([job.length for job in jobs])
    in_mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float().unsqueeze(2)
    noise_w = torch.full((rows,), 0.8 * temperature)
    seeds = None if temperature == 0.0 else torch.tensor([11, 12, 13], dtype=torch.int64)[:rows]
    with torch.inference_mode():
        plain = tiny_backend._front_pass(True, ids, in_mask, noise_w, seeds, None)
        bucket = row_bucket(rows) + 8
        padded = tiny_backend._front_pass(True, *(padded_rows(t, bucket) for t in (ids, in_mask, noise_w, seeds)), None)
    for alone, in_bucket in zip(plain, padded, strict=True):
        assert in_bucket.shape[0] == bucket
        torch.testing.assert_close(in_bucket[:rows], alone, rtol=0, atol=0)


def test_the_setting_reaches_the_backend_and_does_nothing_on_cpu(tiny_vits_dir: Path) -> None:
    assert Settings.from_env({"CHORUS_CUDA_GRAPHS": "1"}).cuda_graphs is True
    assert Settings.from_env({}).cuda_graphs is False
    backend: Any = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu", cuda_graphs=True))
    assert backend._graphs is None
    jobs = [job for text in TEXTS for job in backend.prepare(text, SynthesisParams(seed=3))]
    assert all(len(audio) > 0 for audio in backend.synthesize(jobs))


def test_graphs_need_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        GraphedCall(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_batches_sound_as_eager_ones_on_cuda(tiny_vits_dir: Path) -> None:
    eager: Any = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cuda"))
    graphed: Any = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cuda", cuda_graphs=True))
    for count in (1, 3, 5):  # three row buckets, each captured then replayed
        texts = (TEXTS * 2)[:count]
        jobs = [job for i, text in enumerate(texts) for job in eager.prepare(text, SynthesisParams(seed=i))]
        expected = eager.synthesize(jobs)
        for _ in range(2):
            got = graphed.synthesize(jobs)
            assert [len(a) for a in got] == [len(a) for a in expected]
            for a, b in zip(got, expected, strict=True):
                assert float(np.abs(a - b).max()) <= 1e-3
    for graphs in (graphed._graphs, graphed._tail_graphs):
        assert graphs.enabled
        assert graphs.graph_count >= 3
