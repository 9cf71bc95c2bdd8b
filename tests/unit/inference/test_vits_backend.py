"""The VITS backend on a tiny random checkpoint loaded through ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference import InvalidTextError, UnknownVoiceError
from inference.backends import ModelSpec, load_backend
from inference.backends import device as device_module
from inference.backends.base import SynthesisJob, SynthesisParams
from inference.backends.device import cpu_has_bf16
from inference.backends.vits import VitsBackend
from inference.errors import ModelLoadError

TEXTS = [
    "hi",
    "the quick brown fox jumps over the lazy dog and keeps on running far away",
    "a medium length sentence here",
]
FULL_SCALE_TOLERANCE = 1e-3


def jobs_for(backend: Any, texts: list[str], **params: Any) -> list[SynthesisJob]:
    out = []
    for i, text in enumerate(texts):
        seeded = {"seed": 100 + i, **params}
        out.extend(backend.prepare(text, SynthesisParams(**seeded)))
    return out


def assert_same_audio(alone: list[np.ndarray], batched: list[np.ndarray]) -> None:
    assert [len(a) for a in alone] == [len(b) for b in batched]
    for a, b in zip(alone, batched, strict=True):
        assert float(np.abs(a - b).max()) <= FULL_SCALE_TOLERANCE


def test_backend_loads_through_from_pretrained(tiny_backend: Any, tiny_vits_dir: Path) -> None:
    info = tiny_backend.info
    assert info.family == "vits"
    assert info.sample_rate_hz == 16000
    assert "en" in info.languages
    assert isinstance(tiny_backend, VitsBackend)
    # Weight norm is folded away for inference: no parametrisations remain.
    assert not any(hasattr(m, "parametrizations") for m in tiny_backend.model.modules())


@pytest.mark.parametrize("batch_decoder", [True, False])
def test_batched_rows_equal_rows_synthesized_alone_at_temperature_0(tiny_backend: Any, batch_decoder: bool) -> None:
    tiny_backend.batch_decoder = batch_decoder
    try:
        jobs = jobs_for(tiny_backend, TEXTS, temperature=0.0)
        alone = [tiny_backend.synthesize([job])[0] for job in jobs]
        batched = tiny_backend.synthesize(list(reversed(jobs)))[::-1]
    finally:
        tiny_backend.batch_decoder = False
    assert_same_audio(alone, batched)


def test_seeded_rows_equal_their_lone_synthesis_even_with_noise(tiny_backend: Any) -> None:
    tiny_backend.batch_decoder = True
    try:
        jobs = jobs_for(tiny_backend, TEXTS, temperature=1.0)
        alone = [tiny_backend.synthesize([job])[0] for job in jobs]
        batched = tiny_backend.synthesize(jobs)
    finally:
        tiny_backend.batch_decoder = False
    assert_same_audio(alone, batched)


def test_the_stock_vits_forward_leaks_padding_and_ours_does_not(tiny_backend: Any, tiny_vits_dir: Path) -> None:
    """The reason the masked decoder exists: stock VitsModel changes a short row when it is batched."""
    from transformers import VitsModel, VitsTokenizer

    stock = VitsModel.from_pretrained(str(tiny_vits_dir)).eval()
    stock.noise_scale = stock.noise_scale_duration = 0.0
    tokenizer = VitsTokenizer.from_pretrained(str(tiny_vits_dir))
    short, long = TEXTS[0], TEXTS[1]
    with torch.no_grad():
        alone = stock(**tokenizer(short, return_tensors="pt")).waveform[0]
        both = stock(**tokenizer([short, long], return_tensors="pt", padding=True))
    n = int(both.sequence_lengths[0])
    assert n == alone.shape[0]
    stock_error = float((both.waveform[0, :n] - alone).abs().max())
    assert stock_error > FULL_SCALE_TOLERANCE  # the leak the issue describes

    tiny_backend.batch_decoder = True
    try:
        jobs = jobs_for(tiny_backend, [short, long], temperature=0.0)
        ours_alone = tiny_backend.synthesize(jobs[:1])[0]
        ours_batched = tiny_backend.synthesize(jobs)[0]
    finally:
        tiny_backend.batch_decoder = False
    np.testing.assert_allclose(ours_alone, alone.numpy(), atol=FULL_SCALE_TOLERANCE)
    assert float(np.abs(ours_batched - ours_alone).max()) <= FULL_SCALE_TOLERANCE


def test_temperature_zero_is_deterministic_and_seeds_reproduce(tiny_backend: Any) -> None:
    a = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[2:], temperature=0.0, seed=1))[0]
    b = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[2:], temperature=0.0, seed=2))[0]
    np.testing.assert_array_equal(a, b)
    c = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[2:], seed=5))[0]
    d = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[2:], seed=5))[0]
    e = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[2:], seed=6))[0]
    np.testing.assert_array_equal(c, d)
    assert len(c) != len(e) or not np.array_equal(c, e)


def test_speed_scales_the_duration(tiny_backend: Any) -> None:
    normal = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[1:2], temperature=0.0))[0]
    fast = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[1:2], temperature=0.0, speed=2.0))[0]
    slow = tiny_backend.synthesize(jobs_for(tiny_backend, TEXTS[1:2], temperature=0.0, speed=0.5))[0]
    assert len(fast) < len(normal) < len(slow)
    assert 0.35 < len(fast) / len(normal) < 0.65


def test_every_row_is_trimmed_to_its_own_length(tiny_backend: Any) -> None:
    jobs = jobs_for(tiny_backend, TEXTS, temperature=0.0)
    tiny_backend.batch_decoder = True
    try:
        waves = tiny_backend.synthesize(jobs)
    finally:
        tiny_backend.batch_decoder = False
    lengths = [len(w) for w in waves]
    assert len(set(lengths)) == len(lengths)
    assert all(n % tiny_backend.hop == 0 and n > 0 for n in lengths)


@pytest.mark.parametrize("text", ["🙂🙂🙂", "中文 ☃", "!!! ???", "   "])
def test_text_with_nothing_pronounceable_is_refused(tiny_backend: Any, text: str) -> None:
    with pytest.raises(InvalidTextError, match="nothing this model can pronounce"):
        tiny_backend.prepare(text, SynthesisParams())


def test_an_unknown_voice_is_refused_with_the_list(tiny_backend: Any) -> None:
    with pytest.raises(UnknownVoiceError, match="not served"):
        tiny_backend.prepare("hello", SynthesisParams(voice="nobody"))


def test_seeded_noise_is_standard_normal_and_independent_of_batch_and_padding() -> None:
    from inference.backends.vits import seeded_normal

    seeds = torch.tensor([0, 1, 12345, 2**62 + 7])
    noise = seeded_normal(seeds, 2, 64, 4000)
    assert noise.shape == (4, 64, 4000)
    assert abs(float(noise.mean())) < 0.01
    assert abs(float(noise.std()) - 1.0) < 0.01
    assert abs(float((noise[0] * noise[1]).mean())) < 0.01  # rows are independent
    alone = seeded_normal(seeds[2:3], 2, 64, 300)
    assert torch.equal(alone[0], noise[2, :, :300])  # same row, same numbers, whatever the batch or padding
    assert not torch.equal(seeded_normal(seeds[2:3], 1, 64, 300), alone)  # streams differ


def test_lengths_rounded_up_to_fewer_shapes_change_no_sample(tiny_backend: Any) -> None:
    """On CPU rows run at their length rounded up (oneDNN builds kernels per shape), padding masked."""
    assert tiny_backend.length_bucket == 0  # the CPU default: the geometric grid
    jobs = jobs_for(tiny_backend, TEXTS, temperature=0.0)
    bucketed = [tiny_backend.synthesize([job])[0] for job in jobs]
    tiny_backend.length_bucket = 1
    try:
        exact = [tiny_backend.synthesize([job])[0] for job in jobs]
    finally:
        tiny_backend.length_bucket = 0
    frames = [len(wave) // tiny_backend.hop for wave in exact]
    assert any(tiny_backend._bucket(n) > n for n in frames)  # some rows really were padded
    assert [len(w) for w in bucketed] == [len(w) for w in exact]
    for a, b in zip(bucketed, exact, strict=True):
        assert float(np.abs(a - b).max()) <= 1e-5


def test_the_cpu_length_grid_is_coarse_and_wastes_at_most_an_eighth(tiny_backend: Any) -> None:
    grid = [tiny_backend._bucket(n) for n in range(1, 4097)]
    assert all(g >= n for n, g in enumerate(grid, start=1))
    assert all(g - n <= max(15, n // 8) for n, g in enumerate(grid, start=1))
    assert grid == sorted(grid)
    assert len(set(grid)) <= 8 + 8 * 5  # 16..128 in steps of 16, then eight shapes an octave


needs_cpu_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU computes no bf16 natively")


@needs_cpu_bf16
def test_bf16_on_cpu_runs_flow_and_vocoder_in_bf16_and_rows_still_batch_exactly(tiny_vits_dir: Path) -> None:
    fp32 = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu"))
    bf16 = load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu", dtype="bf16"))
    assert bf16.info.dtype == "bf16"
    assert {p.dtype for p in bf16.model.decoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.flow.parameters()} == {torch.bfloat16}
    # The text side (durations) stays fp32, so every row keeps its fp32 length.
    assert {p.dtype for p in bf16.model.text_encoder.parameters()} == {torch.float32}

    jobs = jobs_for(bf16, TEXTS, temperature=0.0)
    alone = [bf16.synthesize([job])[0] for job in jobs]
    assert_same_audio(alone, bf16.synthesize(jobs))
    reference = [fp32.synthesize([job])[0] for job in jobs]
    assert [len(a) for a in alone] == [len(r) for r in reference]
    for ours, exact in zip(alone, reference, strict=True):
        assert ours.dtype == np.float32
        assert np.isfinite(ours).all()
        assert not np.array_equal(ours, exact)  # really computed in bf16 ...
        rms = float(np.sqrt(np.mean((ours - exact) ** 2)))
        assert rms <= 0.05 * float(np.sqrt(np.mean(exact**2)))  # ... and close (41 dB SNR measured here)


def test_half_precision_on_cpu_is_refused_with_the_reason(tiny_vits_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError, match="fp16 needs a CUDA device"):
        load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu", dtype="fp16"))
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ModelLoadError, match="AVX-512 BF16 or AMX"):
        load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu", dtype="bf16"))


async def test_rows_whose_callers_left_mid_batch_are_not_decoded(
    tiny_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row by row (the CPU default), a row nobody waits for any more costs no flow or vocoder pass."""
    import asyncio
    import threading

    from inference import MicroBatcher
    from inference.backends.base import Voiced, timed_synthesis

    decoded: list[int] = []
    decode = tiny_backend._decode
    monkeypatch.setattr(tiny_backend, "_decode", lambda latents, *rest: decoded.append(1) or decode(latents, *rest))
    inside, resume = threading.Event(), threading.Event()
    run = timed_synthesis(tiny_backend)

    def gated(jobs: Any) -> list[Voiced]:
        inside.set()
        assert resume.wait(10)
        return run(jobs)

    batcher: MicroBatcher[SynthesisJob, Voiced] = MicroBatcher(
        gated, max_batch_size=4, max_queue_size=8, max_batch_wait_s=0.05, length_of=lambda job: job.length
    )
    batcher.start().result(timeout=10)
    try:
        [short, long] = jobs_for(tiny_backend, [TEXTS[0], TEXTS[1]])
        kept = batcher.enqueue([short])
        left = asyncio.ensure_future(batcher.enqueue([long]).wait())
        assert await asyncio.to_thread(inside.wait, 10)
        left.cancel()
        await asyncio.sleep(0.01)
        resume.set()
        [done] = await kept.wait()
    finally:
        batcher.stop()
    assert done.batch_size == 2
    assert decoded == [1]  # only the row still wanted went through the vocoder
    [alone] = tiny_backend.synthesize([short])
    np.testing.assert_allclose(done.value.audio, alone, atol=FULL_SCALE_TOLERANCE)
