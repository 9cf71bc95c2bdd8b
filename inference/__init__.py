"""The Chorus engine: micro-batcher, model backends, text handling and audio encoding.

It never imports the HTTP layer and never reads the environment; everything comes in through
constructors.
"""

from __future__ import annotations

from inference.batcher import Completed, MicroBatcher
from inference.errors import (
    BatcherStoppedError,
    DeadlineExceededError,
    InferenceError,
    InvalidTextError,
    ModelLoadError,
    QueueFullError,
    SynthesisError,
    UnknownVoiceError,
)

__all__ = [
    "BatcherStoppedError",
    "Completed",
    "DeadlineExceededError",
    "InferenceError",
    "InvalidTextError",
    "MicroBatcher",
    "ModelLoadError",
    "QueueFullError",
    "SynthesisError",
    "UnknownVoiceError",
]
