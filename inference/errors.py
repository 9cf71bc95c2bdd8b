"""Typed errors the engine raises; the HTTP layer maps each to one status code."""

from __future__ import annotations


class InferenceError(Exception):
    """Base class for every error the engine raises on purpose."""


class QueueFullError(InferenceError):
    """The batcher's bounded queue is full: the caller should retry later."""

    def __init__(self, queue_depth: int, retry_after_s: float, *, detail: str | None = None) -> None:
        super().__init__(detail or f"the synthesis queue is full ({queue_depth} jobs waiting)")
        self.queue_depth = queue_depth
        self.retry_after_s = retry_after_s


class BatcherStoppedError(InferenceError):
    """The batcher is not running (not started yet, draining, or stopped)."""


class DeadlineExceededError(InferenceError):
    """A job waited past its deadline, or could not finish before it, and was dropped unsynthesized."""


class InvalidTextError(InferenceError):
    """The text cannot be synthesized by this model (for example, nothing in it is pronounceable)."""

    def __init__(self, message: str = "the text contains nothing this model can pronounce") -> None:
        super().__init__(message)


class UnknownVoiceError(InferenceError):
    """The requested voice is not one the model serves."""

    def __init__(self, voice: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "(none)"
        super().__init__(f"voice {voice!r} is not served; available voices: {listed}")
        self.voice = voice
        self.available = available


class UnsupportedParameterError(InferenceError):
    """A request parameter the served model cannot honour (for example ``speed`` on Bark)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter} is not supported by this model: {reason}")
        self.parameter = parameter


class ModelLoadError(InferenceError):
    """A model or voice could not be loaded or converted; the message names the file and the problem."""


class SynthesisError(InferenceError):
    """The model failed on one job (after isolating it from the rest of its batch)."""
