"""SpeechT5 on a tiny random checkpoint loaded through ``load_backend`` (the production path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.backends import ModelSpec, load_backend
from inference.backends.base import SynthesisParams
from inference.errors import InvalidTextError, ModelLoadError, UnknownVoiceError
from tests.tiny_model import write_tiny_speecht5

TEXTS = ["Hello there.", "A much longer sentence to say here.", "Hi."]


@pytest.fixture(scope="module")
def speecht5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_speecht5(tmp_path_factory.mktemp("speecht5"))


@pytest.fixture(scope="module")
def backend(speecht5_dir: Path) -> Any:
    return load_backend(ModelSpec(model=str(speecht5_dir), device="cpu"))


def jobs(backend: Any, seeds: tuple[int, ...] = (1, 2, 3), **params: Any) -> list[Any]:
    voices = ("alice", "bob", None)
    return [
        backend.prepare(text, SynthesisParams(seed=seed, voice=voice, **params))[0]
        for text, seed, voice in zip(TEXTS, seeds, voices, strict=True)
    ]


def test_the_family_comes_from_the_config(backend: Any) -> None:
    assert backend.info.family == "speecht5"
    assert backend.info.voices == ("alice", "bob")
    assert backend.info.default_voice == "alice"
    assert backend.info.sample_rate_hz == 16000


@pytest.mark.parametrize("batch_decoder", [False, True])
def test_batched_rows_equal_rows_alone_with_dropout_on(backend: Any, batch_decoder: bool) -> None:
    backend.batch_decoder = batch_decoder
    try:
        batch = jobs(backend)
        together = backend.synthesize(batch)
        alone = [backend.synthesize([job])[0] for job in batch]
    finally:
        backend.batch_decoder = False
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b)
        assert float(np.abs(a - b).max()) <= 1e-5


def test_rows_are_trimmed_to_their_own_length(backend: Any) -> None:
    waves = backend.synthesize(jobs(backend))
    lengths = [len(w) for w in waves]
    assert len(set(lengths)) == 3
    hop_frames = backend.hop * backend.reduction
    for job, n in zip(jobs(backend), lengths, strict=True):
        # The tiny model never fires its stop token: each row runs to its own maximum length.
        assert n == int(job.length * backend.max_length_ratio / backend.reduction) * hop_frames


def test_the_stop_token_ends_rows(speecht5_dir: Path) -> None:
    eager = load_backend(ModelSpec(model=str(speecht5_dir), device="cpu"))
    with torch.no_grad():
        eager.model.speech_decoder_postnet.prob_out.bias.fill_(10.0)
    waves = eager.synthesize(jobs(eager))
    assert [len(w) for w in waves] == [eager.reduction * eager.hop] * 3  # every row stops after one step


def test_seeds_reproduce_and_differ_and_temperature_0_is_deterministic(backend: Any) -> None:
    first = backend.synthesize(jobs(backend, (7, 8, 9)))
    again = backend.synthesize(jobs(backend, (7, 8, 9)))
    other = backend.synthesize(jobs(backend, (70, 80, 90)))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # Other seeds, other dropout masks: different audio (the tiny random model reacts weakly to its prenet,
    # so the difference is small, but far above the 1e-12 between batched and lone rows).
    assert all(float(np.abs(a - c).max()) > 1e-5 * float(np.abs(a).max()) for a, c in zip(first, other, strict=True))
    calm = backend.synthesize(jobs(backend, (7, 8, 9), temperature=0.0))
    calm_other = backend.synthesize(jobs(backend, (70, 80, 90), temperature=0.0))
    assert all(np.array_equal(a, b) for a, b in zip(calm, calm_other, strict=True))


def test_speed_stretches_time(backend: Any) -> None:
    normal = backend.synthesize(jobs(backend))[1]
    fast = backend.synthesize(jobs(backend, speed=2.0))[1]
    assert abs(len(fast) - len(normal) / 2) <= backend.hop


def test_voices_numbers_and_bad_text(backend: Any) -> None:
    with pytest.raises(UnknownVoiceError, match="alice, bob"):
        backend.prepare("Hello.", SynthesisParams(voice="carol"))
    with pytest.raises(InvalidTextError):
        backend.prepare("☃☃", SynthesisParams())
    spelled = backend.prepare("I have forty-two.", SynthesisParams())[0].token_ids
    digits = backend.prepare("I have 42.", SynthesisParams())[0].token_ids
    assert spelled.tolist() == digits.tolist()
    assert backend.unsayable("Straße ☃ 42!") == "ß☃"


def test_without_speakers_the_load_says_what_to_do(speecht5_dir: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(speecht5_dir, bare, ignore=shutil.ignore_patterns("speakers"))
    with pytest.raises(ModelLoadError, match="CHORUS_SPEAKERS_DIR"):
        load_backend(ModelSpec(model=str(bare), device="cpu"))
    # ... and a speakers folder given by setting serves its files as voices.
    extra = tmp_path / "xvectors"
    extra.mkdir()
    np.save(extra / "dave.npy", np.ones(512, dtype=np.float32))
    assert load_backend(ModelSpec(model=str(bare), device="cpu", speakers_dir=str(extra))).info.voices == ("dave",)
    np.save(extra / "broken.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(ModelLoadError, match=r"broken\.npy.*512"):
        load_backend(ModelSpec(model=str(bare), device="cpu", speakers_dir=str(extra)))
