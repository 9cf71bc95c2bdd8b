"""Multi-speaker Piper-style voices: speakers are voices, and mixed-speaker batches stay exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference import UnknownVoiceError
from inference.backends.base import SynthesisParams
from tests.tiny_model import write_tiny_piper_voice


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from inference.backends import ModelSpec, load_backend

    folder = write_tiny_piper_voice(tmp_path_factory.mktemp("tiny-piper") / "voice")
    return load_backend(ModelSpec(model=str(folder), device="cpu"))


def test_speakers_are_listed_as_voices(voices: Any, tmp_path: Path) -> None:
    assert voices.info.voices == ("alice", "bob", "carol")
    assert voices.info.default_voice == "alice"
    assert "en" in voices.info.languages


def test_each_voice_sounds_different(voices: Any) -> None:
    out = {}
    for name in voices.info.voices:
        jobs = voices.prepare("Hello there.", SynthesisParams(temperature=0.0, voice=name))
        out[name] = voices.synthesize(jobs)[0]
    assert not np.array_equal(out["alice"][:1000], out["bob"][:1000])
    assert not np.array_equal(out["bob"][:1000], out["carol"][:1000])


@pytest.mark.parametrize("batch_decoder", [False, True])
def test_a_mixed_speaker_batch_equals_each_row_alone(voices: Any, batch_decoder: bool) -> None:
    texts = [("Hi.", "carol"), ("A much longer sentence for the second speaker.", "bob"), ("Medium one.", None)]
    jobs = [voices.prepare(t, SynthesisParams(seed=3, voice=v))[0] for t, v in texts]
    alone = [voices.synthesize([job])[0] for job in jobs]
    voices.batch_decoder = batch_decoder
    try:
        batched = voices.synthesize(jobs)
    finally:
        voices.batch_decoder = False
    for a, b in zip(alone, batched, strict=True):
        assert len(a) == len(b)
        assert float(np.abs(a - b).max()) <= 1e-3


def test_an_unknown_speaker_is_refused(voices: Any) -> None:
    with pytest.raises(UnknownVoiceError, match="alice, bob, carol"):
        voices.prepare("Hello.", SynthesisParams(voice="dave"))
