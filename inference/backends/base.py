"""The small protocol every model family implements, and the types that cross it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model serves, as the HTTP layer and clients see it."""

    name: str
    family: str
    sample_rate_hz: int
    languages: tuple[str, ...]
    voices: tuple[str, ...] = ()
    default_voice: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    #: The model can say when each word is spoken (``SynthesisParams.timestamps``; ``TimedBackend``).
    word_timestamps: bool = False


@dataclass(frozen=True, slots=True)
class SynthesisParams:
    """Per-request knobs. ``temperature=None`` means the model's own noise defaults."""

    temperature: float | None = None
    speed: float = 1.0
    seed: int = 0
    voice: str | None = None
    #: The client chose the seed (rather than the server drawing one): families that cannot keep a row's
    #: randomness independent of its batch (Bark) run such a request alone so that it repeats.
    seeded: bool = False
    #: Find which tokens say each word (``SynthesisJob.words``), so that the audio can be timed word by word.
    #: Only families whose ``info.word_timestamps`` is true do; the others ignore it.
    timestamps: bool = False


@dataclass(frozen=True, slots=True)
class WordSpan:
    """A word of a job's text (as written, punctuation attached) and the tokens that say it: ``first`` up
    to ``end`` (exclusive). ``first == end`` for a word the model says nothing for (a lone dash): it is
    placed there, with no length."""

    text: str
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class SynthesisJob:
    """One row of a forward pass: prepared token ids plus the parameters that shape its audio."""

    token_ids: npt.NDArray[np.int64]
    params: SynthesisParams = field(default_factory=SynthesisParams)
    #: Which served model runs it (several models can share one batcher); "" when only one is served.
    model: str = ""
    #: Silence the pipeline puts before and after this job's audio (SSML ``<break>``); backends ignore it.
    pause_before_s: float = 0.0
    pause_after_s: float = 0.0
    #: The words of its text and their tokens, in order (only with ``SynthesisParams.timestamps``).
    words: tuple[WordSpan, ...] = ()

    @property
    def length(self) -> int:
        """Token count, used to sort a batch and cut padding."""
        return int(self.token_ids.shape[0])


@runtime_checkable
class Backend(Protocol):
    """A TTS model that turns prepared jobs into float waveforms, a whole batch per call.

    ``prepare`` runs on any thread (it must be thread-safe or guard itself); ``synthesize`` and
    ``warmup`` run on the batcher's single worker thread only.
    """

    @property
    def info(self) -> ModelInfo:
        """What this backend serves."""
        ...

    def prepare(self, text: str, params: SynthesisParams) -> list[SynthesisJob]:
        """Turn text into one job per segment (sentence), in order.

        Raises ``InvalidTextError`` when nothing in the text can be spoken and ``UnknownVoiceError``
        for a voice the model does not have.
        """
        ...

    def unsayable(self, text: str) -> str:
        """The characters of ``text`` the model cannot say and will leave out (each once), so that the
        service can report them instead of dropping them silently."""
        ...

    def batch_key(self, job: SynthesisJob) -> Hashable:
        """Jobs with equal keys may share one forward pass."""
        ...

    def synthesize(self, jobs: Sequence[SynthesisJob]) -> list[npt.NDArray[np.float32]]:
        """Synthesize a batch; returns one mono float32 waveform per job, each trimmed to its own length and
        its own (the receiver may change it in place; see ``Voiced``)."""
        ...

    def warmup(self) -> None:
        """Run a tiny synthesis so that the first real request does not pay for lazy initialisation."""
        ...


@dataclass(frozen=True, slots=True)
class Voiced:
    """A job's audio, with how many samples each of its tokens lasted when the model can tell.

    The audio is the job's own (no other job's result shares its memory): whoever receives it may change it
    in place, as the edge fade does. A backend that must keep its buffer hands it out read-only or copied."""

    audio: npt.NDArray[np.float32]
    #: One count per token of the job (they add up to the audio's length); ``None`` for families whose
    #: output is not aligned to their input tokens.
    token_samples: npt.NDArray[np.int64] | None = None


@runtime_checkable
class TimedBackend(Backend, Protocol):
    """A backend that predicts each token's duration (VITS) and so can time its audio word by word."""

    def synthesize_timed(self, jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        """``synthesize``, with each token's duration in samples."""
        ...


def timed_synthesis(backend: Backend) -> Callable[[Sequence[SynthesisJob]], list[Voiced]]:
    """The batch function the engine runs for ``backend``: its audio, timed wherever the family can."""
    if isinstance(backend, TimedBackend):
        return backend.synthesize_timed

    def untimed(jobs: Sequence[SynthesisJob]) -> list[Voiced]:
        return [Voiced(audio) for audio in backend.synthesize(jobs)]

    return untimed
