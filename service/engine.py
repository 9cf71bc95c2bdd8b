"""Bringing the engine up: load the model on the batcher's own thread, warm it, build the pipeline.

Shared by the HTTP app (``chorus serve``) and the RunPod queue worker (``chorus runpod-worker``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference import MicroBatcher
from inference.backends import ModelSpec
from inference.backends.base import Backend, SynthesisJob
from inference.speech import SpeechPipeline
from service.settings import Settings
from service.state import Phase, ServiceState

__all__ = ["RUNPOD_HF_CACHE", "bring_up"]

log = logging.getLogger("chorus")


def _model_spec(settings: Settings) -> ModelSpec:
    return ModelSpec(
        model=settings.model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.resolved_cache_dir,
        languages=settings.languages,
        batch_decoder={"auto": None, "on": True, "off": False}[settings.batch_decoder],
        torch_threads=settings.torch_threads,
        speakers_dir=settings.speakers_dir,
        vocoder=settings.vocoder,
    )


RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")


def _load_backend(settings: Settings) -> Backend:
    # Imported here so that importing the app (and the HTTP-only tests) does not pay for torch.
    from inference.backends import load_backend

    if "HF_HUB_CACHE" not in os.environ and RUNPOD_HF_CACHE.is_dir():
        # A RunPod network volume carries the Hugging Face cache: hub ids resolve there, offline.
        os.environ["HF_HUB_CACHE"] = str(RUNPOD_HF_CACHE)
        log.info("using the network volume's Hugging Face cache at %s", RUNPOD_HF_CACHE)

    return load_backend(_model_spec(settings))


async def bring_up(chorus: ServiceState, backend: Backend | None) -> None:
    """Load and warm up the model on the batcher's own thread; a failure is recorded (→ 503), never raised."""
    settings = chorus.settings
    t0 = time.monotonic()
    loaded: list[Backend] = []

    def setup() -> Callable[[list[SynthesisJob]], Sequence[npt.NDArray[np.float32]]]:
        # Runs on the worker thread that will run every batch (see MicroBatcher.start for why).
        model = backend if backend is not None else _load_backend(settings)
        model.warmup()
        loaded.append(model)
        return model.synthesize

    batcher: MicroBatcher[SynthesisJob, npt.NDArray[np.float32]] = MicroBatcher(
        max_batch_size=settings.max_batch_size,
        max_queue_size=settings.max_queue,
        max_batch_wait_s=settings.max_batch_wait_ms / 1000.0,
        length_of=lambda job: job.length,
        key_of=lambda job: loaded[0].batch_key(job),
        on_batch=chorus.metrics.observe_batch if chorus.metrics is not None else None,
    )
    try:
        await asyncio.wrap_future(batcher.start(setup))
    except Exception as exc:  # an escaping exception would kill the lifespan: record it instead
        chorus.failure = f"model failed to load: {exc}"
        chorus.phase = Phase.FAILED
        log.error("%s", chorus.failure, exc_info=not isinstance(exc, (OSError, ValueError)))
        return
    chorus.backend, chorus.batcher = loaded[0], batcher
    chorus.pipeline = SpeechPipeline(
        loaded[0],
        batcher,
        max_chunk_chars=settings.max_chunk_chars,
        stream_window=settings.max_batch_size,
        request_timeout_s=settings.request_timeout_s,
    )
    chorus.load_s = time.monotonic() - t0
    if chorus.phase is Phase.LOADING:  # a SIGTERM during the load keeps the server draining
        chorus.phase = Phase.READY
    info = loaded[0].info
    log.info(
        "ready: %s (%s, %d Hz, %s, %s) in %.1f s",
        info.name, info.family, info.sample_rate_hz, info.device, info.dtype, chorus.load_s,
    )  # fmt: skip
