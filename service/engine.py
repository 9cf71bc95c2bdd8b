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
from typing import TYPE_CHECKING

import anyio

from inference import MicroBatcher
from inference.backends import ModelSpec
from inference.backends.base import Backend, SynthesisJob, Voiced, timed_synthesis
from inference.speech import SpeechPipeline
from service.settings import Settings
from service.state import Phase, ServiceState

if TYPE_CHECKING:
    from inference.backends.remote import ModelServer

__all__ = ["CPU_MAX_BATCH", "GPU_MAX_BATCH", "MODEL_SERVERS_ENV", "RUNPOD_HF_CACHE", "bring_up", "start_model_servers"]

log = logging.getLogger("chorus")


def _model_spec(settings: Settings, model: str | None, languages: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        model=model,
        device=settings.device,
        dtype=settings.dtype,
        cache_dir=settings.resolved_cache_dir,
        languages=languages,
        batch_decoder={"auto": None, "on": True, "off": False}[settings.batch_decoder],
        torch_threads=settings.torch_threads,
        cuda_graphs=settings.cuda_graphs,
        speakers_dir=settings.speakers_dir,
        vocoder=settings.vocoder,
    )


RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")

#: The batch cap when CHORUS_MAX_BATCH_SIZE is unset. On 2 CPU cores, closed-loop A/Bs through the service
#: (c=16, 5-6 rounds) had a cap of 4 at 1.04x a cap of 16, no batching at 1.02-1.03x;
#: at c=4 no batching 0.97x. On an H200 (bf16, one run) a cap of 64 beat 16 at c=8, 32 and 64 by 18, 3 and 17 %.
GPU_MAX_BATCH, CPU_MAX_BATCH = 64, 4


def _specs(settings: Settings) -> list[tuple[str | None, ModelSpec]]:
    """(routed language or None, spec) per model to serve."""
    routes = settings.model_routes()
    if not routes:
        return [(None, _model_spec(settings, settings.model, settings.languages))]
    return [(language, _model_spec(settings, source, (language,))) for language, source in routes]


#: Set by ``chorus serve`` for its workers when they share model processes (``start_model_servers``): the
#: folder of their sockets. Not a setting (the name has no CHORUS_ prefix for that reason).
MODEL_SERVERS_ENV = "_CHORUS_MODEL_SERVERS"


def use_hub_cache_volume() -> None:
    """A RunPod network volume carries the Hugging Face cache: hub ids resolve there, offline."""
    if "HF_HUB_CACHE" not in os.environ and RUNPOD_HF_CACHE.is_dir():
        os.environ["HF_HUB_CACHE"] = str(RUNPOD_HF_CACHE)
        log.info("using the network volume's Hugging Face cache at %s", RUNPOD_HF_CACHE)


def _load_backend(spec: ModelSpec, *, own_process: bool = False, index: int = 0) -> Backend:
    # Imported here so that importing the app (and the HTTP-only tests) does not pay for torch.
    from inference.backends import load_backend

    use_hub_cache_volume()
    if own_process:
        from inference.backends.remote import ModelProcess

        shared = os.environ.get(MODEL_SERVERS_ENV)
        if shared:
            return ModelProcess.connect(spec, str(Path(shared) / f"model-{index}"))
        return ModelProcess.start(spec)
    return load_backend(spec)


def start_model_servers(settings: Settings, folder: Path) -> list[ModelServer]:
    """One shared model process per model (``CHORUS_MODEL_PROCESS`` with ``CHORUS_PROCESSES`` > 1), listening
    in ``folder``; the workers find it through ``MODEL_SERVERS_ENV``. Their batches merge there up to the
    batch cap (``CHORUS_MAX_BATCH_SIZE``, or its default for the device)."""
    from inference.backends.remote import ModelServer

    use_hub_cache_volume()
    cap = settings.max_batch_size
    rows = (cap or GPU_MAX_BATCH, cap or CPU_MAX_BATCH)
    servers = [
        ModelServer.start(spec, str(folder / f"model-{index}"), rows)
        for index, (_, spec) in enumerate(_specs(settings))
    ]
    os.environ[MODEL_SERVERS_ENV] = str(folder)
    return servers


def _unique_names(loaded: list[tuple[str | None, Backend]]) -> list[str]:
    names = [backend.info.name for _, backend in loaded]
    return [
        name if names.count(name) == 1 or language is None else f"{name}-{language}"
        for name, (language, _) in zip(names, loaded, strict=True)
    ]


async def bring_up(
    chorus: ServiceState, backend: Backend | None = None, routed: dict[str, Backend] | None = None
) -> None:
    """Load and warm up every model on the batcher's own thread; a failure is recorded (→ 503), never raised.

    ``backend`` (one model) or ``routed`` (language → model) hand in loaded models (tests); otherwise the
    settings name them. Several models share one batcher: a job's ``model`` picks its backend, and the
    oldest job in the queue decides what runs next, so a busy model cannot starve another.
    """
    settings = chorus.settings
    t0 = time.monotonic()
    loaded: list[tuple[str | None, Backend]] = []
    by_key: dict[str, Backend] = {}

    def setup() -> Callable[[list[SynthesisJob]], Sequence[Voiced]]:
        # Runs on the worker thread that will run every batch (see MicroBatcher.start for why).
        models: list[tuple[str | None, Backend]]
        if routed is not None:
            models = list(routed.items())
        elif backend is not None:
            models = [(None, backend)]
        else:
            own = settings.model_process
            models = [
                (language, _load_backend(spec, own_process=own, index=index))
                for index, (language, spec) in enumerate(_specs(settings))
            ]
        for language, model in models:
            model.warmup()
            loaded.append((language, model))
        keys = [""] if len(loaded) == 1 else _unique_names(loaded)
        by_key.update(zip(keys, (model for _, model in loaded), strict=True))
        if settings.max_batch_size is None:  # before any batch: this is the worker thread
            on_gpu = any(model.info.device.startswith("cuda") for _, model in loaded)
            batcher.max_batch_size = GPU_MAX_BATCH if on_gpu else CPU_MAX_BATCH

        runners = {key: timed_synthesis(model) for key, model in by_key.items()}

        def dispatch(jobs: list[SynthesisJob]) -> Sequence[Voiced]:
            return runners[jobs[0].model](jobs)

        return dispatch

    batcher: MicroBatcher[SynthesisJob, Voiced] = MicroBatcher(
        max_batch_size=settings.max_batch_size or GPU_MAX_BATCH,  # unset: chosen once the device is known
        max_queue_size=settings.max_queue,
        max_queue_wait_s=settings.max_queue_wait_s,
        max_batch_wait_s=settings.max_batch_wait_ms / 1000.0,
        length_of=lambda job: job.length,
        key_of=lambda job: (job.model, by_key[job.model].batch_key(job)),
        on_batch=chorus.metrics.observe_batch if chorus.metrics is not None else None,
    )
    try:
        await asyncio.wrap_future(batcher.start(setup))
    except asyncio.CancelledError:
        # Shut down while loading: the worker thread is inside torch (loading or warming up). Were the
        # interpreter to exit under it, the process would abort ("terminate called without an active
        # exception", exit code 134) instead of exiting 0, so it is let finish, up to the drain timeout.
        # anyio's hand-off, not off_loop: cancelled again, it still waits for the thread.
        await anyio.to_thread.run_sync(lambda: batcher.stop(drain=False, timeout_s=settings.drain_timeout_s))
        raise
    except Exception as exc:  # an escaping exception would kill the lifespan: record it instead
        chorus.failure = f"model failed to load: {exc}"
        chorus.phase = Phase.FAILED
        log.error("%s", chorus.failure, exc_info=not isinstance(exc, (OSError, ValueError)))
        return
    pipelines: dict[str, SpeechPipeline] = {}
    routes: dict[str, str] = {}
    lexicon = settings.load_lexicon()  # checked at start-up already; read again here, where it is used
    for (language, model), key in zip(loaded, by_key, strict=True):
        name = key or model.info.name
        pipelines[name] = SpeechPipeline(
            model,
            batcher,
            max_chunk_chars=settings.max_chunk_chars,
            stream_window=batcher.max_batch_size,
            request_timeout_s=settings.request_timeout_s,
            model_key=key,
            lexicon=lexicon,
        )
        for code in (language,) if language else model.info.languages:
            routes.setdefault(code, name)
    chorus.backend, chorus.batcher = loaded[0][1], batcher
    chorus.pipelines, chorus.language_routes = pipelines, routes
    chorus.pipeline = next(iter(pipelines.values()))
    chorus.load_s = time.monotonic() - t0
    if chorus.phase is Phase.LOADING:  # a SIGTERM during the load keeps the server draining
        chorus.phase = Phase.READY
        if chorus.siblings is not None:
            chorus.siblings.mark_ready()
    for name, pipeline in pipelines.items():
        info = pipeline.backend.info
        log.info(
            "ready: %s (%s, %d Hz, %s, %s, languages %s)",
            name, info.family, info.sample_rate_hz, info.device, info.dtype, ", ".join(info.languages),
        )  # fmt: skip
    log.info("%d model(s) loaded and warmed up in %.1f s", len(pipelines), chorus.load_s)
