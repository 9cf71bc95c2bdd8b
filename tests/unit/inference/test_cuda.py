"""The VITS backend on a CUDA GPU (skipped without one; ``benchmarks/gpu_check.sh --tests`` runs them there).

The CPU path is what every other test checks; these are the claims only a GPU can check: fp32 on CUDA
(TF32 off) batches rows exactly and agrees with the CPU, bf16 stays close to fp32, and a batch that only
fits with fewer rows is not refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.backends import ModelSpec, load_backend
from tests.unit.inference.test_vits_backend import TEXTS, assert_same_audio, jobs_for

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_backend(tiny_vits_dir: Path) -> Any:
    return load_backend(ModelSpec(model=str(tiny_vits_dir), device="cuda"))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rows_batched_on_cuda_equal_their_lone_synthesis(cuda_backend: Any, temperature: float) -> None:
    assert cuda_backend.batch_decoder  # the CUDA default
    jobs = jobs_for(cuda_backend, TEXTS * 3, temperature=temperature)
    alone = [cuda_backend.synthesize([job])[0] for job in jobs]
    assert_same_audio(alone, cuda_backend.synthesize(jobs[::-1])[::-1])


@torch.inference_mode()
def test_cuda_fp32_agrees_with_the_cpu_stage_by_stage(cuda_backend: Any, tiny_vits_dir: Path) -> None:
    # Stage by stage on the same inputs (whole waveforms could differ in length where a duration sits at a
    # rounding boundary): the text side, then noise, flow and vocoder on the CPU's channels-last path.
    cpu = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu"))
    rows, tokens, frames = 3, 24, 80
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, cpu.config.vocab_size, (rows, tokens), generator=generator)
    in_mask = (torch.arange(tokens)[None, :] < torch.tensor([24, 9, 17])[:, None]).float().unsqueeze(2)
    noise_w, seeds = torch.full((rows,), 0.8), torch.tensor([1, 2, 3])
    front = (True, ids, in_mask, noise_w, seeds, None)
    on_cpu = cpu._front_pass(*front)
    on_cuda = cuda_backend._front_pass(*(t.cuda() if isinstance(t, torch.Tensor) else t for t in front))
    for a, b in zip(on_cpu, on_cuda, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)
    means = torch.randn(rows, cpu.config.flow_size, frames, generator=generator)
    log_var = torch.randn(rows, cpu.config.flow_size, frames, generator=generator) * 0.1
    out_mask = (torch.arange(frames)[None, :] < torch.tensor([80, 33, 61])[:, None]).float().unsqueeze(1)
    back = (means, log_var, out_mask, torch.full((rows,), 0.667), seeds, None)
    (wave_cpu,) = cpu._back_pass(*back)
    (wave_cuda,) = cuda_backend._back_pass(*(t.cuda() if isinstance(t, torch.Tensor) else t for t in back))
    torch.testing.assert_close(wave_cuda.cpu(), wave_cpu, rtol=0, atol=1e-3)


def test_bf16_on_cuda_stays_close_to_fp32(cuda_backend: Any, tiny_vits_dir: Path) -> None:
    half = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cuda", dtype="bf16"))
    jobs = jobs_for(half, TEXTS, temperature=0.0)
    for exact, approximate in zip(cuda_backend.synthesize(jobs), half.synthesize(jobs), strict=True):
        assert len(exact) == len(approximate)
        assert np.isfinite(approximate).all()
        error = np.sqrt(np.mean((exact - approximate) ** 2)) / max(1e-6, float(np.sqrt(np.mean(exact**2))))
        assert error < 0.1


def test_device_memory_is_reported_on_cuda(cuda_backend: Any) -> None:
    cuda_backend.synthesize(jobs_for(cuda_backend, TEXTS))
    memory = cuda_backend.device_memory()
    assert memory["peak"] >= memory["allocated"] > 0
    assert memory["reserved"] >= memory["allocated"]
