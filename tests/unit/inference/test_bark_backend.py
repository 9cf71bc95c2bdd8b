"""Bark on a tiny random checkpoint loaded through ``load_backend`` (the production path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import ModelSpec, load_backend
from inference.backends.base import SynthesisParams
from inference.errors import UnknownVoiceError, UnsupportedParameterError
from tests.tiny_model import write_tiny_bark

TEXTS = ["hello world.", "a longer sentence is said here.", "hi.", "yes indeed."]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_backend(ModelSpec(model=str(write_tiny_bark(tmp_path_factory.mktemp("bark"))), device="cpu"))


def speak(backend: Any, text: str, **params: Any) -> np.ndarray:
    return backend.synthesize(backend.prepare(text, SynthesisParams(**params)))[0]  # type: ignore[no-any-return]


def test_the_family_and_voices_come_from_the_checkpoint(backend: Any) -> None:
    assert backend.info.family == "bark"
    assert backend.info.voices == ("random", "narrator")
    assert backend.info.sample_rate_hz == 24000


def test_a_batch_gives_every_row_its_audio(backend: Any) -> None:
    jobs = [backend.prepare(text, SynthesisParams(seed=i))[0] for i, text in enumerate(TEXTS)]
    waves = backend.synthesize(jobs)
    assert len(waves) == len(TEXTS)
    assert all(len(w) > 0 and np.isfinite(w).all() for w in waves)
    assert all(len(w) % 320 == 0 for w in waves)  # whole EnCodec frames (75 Hz at 24 kHz)
    assert len({len(w) for w in waves}) > 1  # each row trimmed to where its own semantic tokens ended


def test_greedy_rows_batched_equal_the_same_rows_alone(backend: Any) -> None:
    jobs = [backend.prepare(text, SynthesisParams(seed=i, temperature=0.0))[0] for i, text in enumerate(TEXTS)]
    together = backend.synthesize(jobs)
    for job, row in zip(jobs, together, strict=True):
        alone = backend.synthesize([job])[0]
        assert len(alone) == len(row)
        assert float(np.abs(alone - row).max()) < 1e-4


def test_seeded_requests_repeat_and_run_alone(backend: Any) -> None:
    first = speak(backend, "hello world.", seed=5, seeded=True)
    assert np.array_equal(first, speak(backend, "hello world.", seed=5, seeded=True))
    assert not np.array_equal(first, speak(backend, "hello world.", seed=6, seeded=True))
    seeded = backend.prepare("hi.", SynthesisParams(seed=1, seeded=True))[0]
    other = backend.prepare("hi.", SynthesisParams(seed=2, seeded=True))[0]
    free = [backend.prepare("hi.", SynthesisParams(seed=s))[0] for s in (3, 4)]
    assert backend.batch_key(seeded) != backend.batch_key(other)  # each seeded request in its own batch
    assert backend.batch_key(free[0]) == backend.batch_key(free[1])  # unseeded ones batch by voice


def test_temperature_0_is_greedy_and_voices_are_presets(backend: Any) -> None:
    assert np.array_equal(
        speak(backend, "hi.", seed=1, temperature=0.0), speak(backend, "hi.", seed=2, temperature=0.0)
    )
    narrated = speak(backend, "hi.", seed=1, seeded=True, voice="narrator")
    assert not np.array_equal(narrated, speak(backend, "hi.", seed=1, seeded=True))
    with pytest.raises(UnknownVoiceError, match="narrator"):
        backend.prepare("hi.", SynthesisParams(voice="nobody"))


def test_speed_is_refused_not_ignored(backend: Any) -> None:
    with pytest.raises(UnsupportedParameterError, match="speed"):
        backend.prepare("hi.", SynthesisParams(speed=1.5))


def test_presets_listed_as_suno_ships_them_are_voices(tmp_path: Path) -> None:
    import json

    folder = write_tiny_bark(tmp_path / "bark", voices=())
    rng = np.random.default_rng(1)
    (folder / "speaker_embeddings").mkdir()
    shapes = {"semantic_prompt": (20,), "coarse_prompt": (2, 30), "fine_prompt": (8, 30)}
    listing: dict[str, Any] = {"repo_or_path": str(folder), "v2/en_speaker_6": {}}
    for key, shape in shapes.items():
        name = f"speaker_embeddings/en_speaker_6_{key}.npy"
        np.save(folder / name, rng.integers(0, 10000 if key == "semantic_prompt" else 1024, shape))
        listing["v2/en_speaker_6"][key] = name
    (folder / "speaker_embeddings_path.json").write_text(json.dumps(listing))
    backend = load_backend(ModelSpec(model=str(folder), device="cpu"))
    assert backend.info.voices == ("random", "v2/en_speaker_6")
    assert len(speak(backend, "hi.", seed=1, seeded=True, voice="v2/en_speaker_6")) > 0
