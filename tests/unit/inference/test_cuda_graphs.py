"""CUDA graphs for VITS's text side (CHORUS_CUDA_GRAPHS): what a CPU can check, and on a GPU the graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.backends import ModelSpec, load_backend
from inference.backends.base import SynthesisParams
from inference.backends.cuda_graphs import GraphedCall, padded_rows, row_bucket
from service.settings import Settings

TEXTS = ["hi", "the quick brown fox jumps over the lazy dog", "a medium length sentence here"]


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
    assert graphed._graphs.enabled
    assert graphed._graphs.graph_count >= 3
