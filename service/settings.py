"""Settings: one frozen msgspec Struct, read from the environment once, refused early when wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from inference.text.lexicon import Lexicon, LexiconError, load_lexicon

__all__ = ["ENV_NAMES", "Settings", "SettingsError"]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class SettingsError(ValueError):
    """A malformed or unknown environment variable; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service can be told. Field docs name the environment variable that sets each."""

    #: PORT: where requests arrive.
    port: Port = 8000
    #: PORT_HEALTH: where /ping also answers when it differs from PORT.
    port_health: Port | None = None
    #: HEALTH_CHECK_PATH: RunPod's own setting that moves its health check off /ping; the health check is
    #: then answered there as well as on /ping.
    health_check_path: Annotated[str, msgspec.Meta(pattern=r"^/[A-Za-z0-9._~/-]{0,200}$")] | None = None
    #: HOST (CHORUS_HOST): the address to bind; RunPod needs 0.0.0.0.
    host: str = "0.0.0.0"
    #: API_KEY: comma-separated keys; empty or unset means no key is required.
    api_keys: tuple[str, ...] = ()
    #: CHORUS_MODEL: a hub id, a checkpoint folder, or a Piper ``.onnx``; unset = the embedded voice.
    model: str | None = None
    #: CHORUS_MODELS: several models at once, routed by language: "en=DIR_OR_ID,fr=facebook/mms-tts-fra".
    models: tuple[str, ...] = ()
    #: CHORUS_DEVICE: auto (CUDA when available), cpu, cuda, cuda:1, ...
    device: str = "auto"
    #: CHORUS_DTYPE: fp32, or fp16/bf16 on CUDA; bf16 also on CPUs with AVX-512 BF16/AMX (VITS only).
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    #: CHORUS_SPEAKERS_DIR: SpeechT5 speaker x-vectors (*.npy, 512 floats each); the file stems are voices.
    speakers_dir: str | None = None
    #: CHORUS_VOCODER: SpeechT5's vocoder when the checkpoint has no vocoder/ folder.
    vocoder: str | None = None
    #: CHORUS_LANGUAGES: override the languages the model declares (comma-separated).
    languages: tuple[str, ...] = ()
    #: CHORUS_LEXICON: a pronunciation lexicon (JSON object or W3C PLS file): words said differently.
    lexicon: str | None = None
    #: CHORUS_CACHE_DIR: where converted voices are kept (default $XDG_CACHE_HOME/chorus).
    cache_dir: str | None = None
    #: CHORUS_MAX_TEXT_CHARS: longest accepted text.
    max_text_chars: Positive = 5000
    #: CHORUS_MAX_STREAM_CHARS: longest accepted text for streamed requests.
    max_stream_chars: Positive = 100_000
    #: CHORUS_MAX_CHUNK_CHARS: longest sentence chunk; longer sentences are cut at clauses, then words.
    max_chunk_chars: Annotated[int, msgspec.Meta(ge=20, le=5000)] = 400
    #: CHORUS_MAX_QUEUE: jobs that may wait; beyond it requests get 429.
    max_queue: Positive = 256
    #: CHORUS_MAX_QUEUE_WAIT_S: also refuse (429) a request whose first sentence would wait longer than this
    #: for a batch, judged from the jobs ahead and recent batch times; unset = only CHORUS_MAX_QUEUE bounds it.
    max_queue_wait_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    #: CHORUS_MAX_BATCH_SIZE: most jobs per forward pass (unset: 64 on a GPU, 4 on CPU, where bigger batches
    #: measured slower through the service on 2 cores).
    max_batch_size: Positive | None = None
    #: CHORUS_MAX_BATCH_WAIT_MS: how long an idle worker may wait to fill a batch (0 = start at once).
    max_batch_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = 0.0
    #: CHORUS_BATCH_DECODER: auto (batched on CUDA, row by row on CPU), on, off.
    batch_decoder: Literal["auto", "on", "off"] = "auto"
    #: CHORUS_CUDA_GRAPHS: VITS on CUDA replays its text encoder and duration predictor from CUDA graphs, one
    #: per bucket of rows and tokens, and with the batched decoder its noise, flow and vocoder too, one per
    #: bucket of rows and frames (~100 of a batch's ~1,300 torch operations left), captured on first use.
    #: No effect on CPU. Not yet measured on a GPU, hence off.
    cuda_graphs: bool = False
    #: CHORUS_PROCESSES: server processes, each with its own copy of the model and its own batcher, behind
    #: one port. One process's event loop and model thread share one interpreter lock, which on a GPU runs
    #: out well before the GPU does; /ping says ready when every process is.
    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    #: CHORUS_MODEL_PROCESS: run each model in a child process of its own, fed batches by the batcher here;
    #: this process keeps a CPU copy for preparing text. Off: the model runs on the batcher's thread.
    model_process: bool = False
    #: CHORUS_TORCH_THREADS: torch intra-op threads (unset = torch's default).
    torch_threads: Positive | None = None
    #: CHORUS_REQUEST_TIMEOUT_S: a job still queued then is dropped (504); below RunPod's 330 s cut.
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 300.0
    #: CHORUS_LIVE_IDLE_TIMEOUT_S: a live WebSocket session that has neither received a message nor had
    #: anything to send for this long is closed (408), so vanished clients do not hold sessions forever.
    live_idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 120.0
    #: CHORUS_DRAIN_TIMEOUT_S: after SIGTERM, how long queued jobs may still run before they fail (503).
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    #: CHORUS_WATCHDOG_S: a batch running longer than this turns /ping to 503 (the worker is stuck).
    watchdog_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 180.0
    #: CHORUS_SWITCH_INTERVAL_MS: how often Python lets another thread take the GIL (Python's default: 5).
    #: The model thread launches GPU work in Python; a shorter interval keeps the event loop responsive.
    switch_interval_ms: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    #: CHORUS_DOCS: the OpenAPI schema and docs under /schema: "auth" (same key rule as the API),
    #: "public" (no key), or "off".
    docs: Literal["auth", "public", "off"] = "auth"
    #: CHORUS_CORS_ORIGINS: browser origins allowed to call the API (comma-separated); none = CORS off.
    cors_origins: tuple[str, ...] = ()
    #: CHORUS_METRICS: GET /metrics under the API key rule ("auth") or without it ("public").
    metrics: Literal["auth", "public"] = "auth"
    #: CHORUS_RUNPOD_CONCURRENCY: jobs a queue-mode worker holds at once (unset: 2 x CHORUS_MAX_BATCH_SIZE,
    #: 32 when that is unset).
    runpod_concurrency: Positive | None = None
    #: CHORUS_PLAYGROUND: the web playground at / and /playground (0 turns it off).
    playground: bool = True
    #: CHORUS_LOG_LEVEL
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def __repr__(self) -> str:
        # Keys must never reach a log line, even through a debug print of the settings.
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        fields["api_keys"] = f"<{len(self.api_keys)} key(s)>" if self.api_keys else "()"
        return "Settings(" + ", ".join(f"{k}={v!r}" if k != "api_keys" else f"{k}={v}" for k, v in fields.items()) + ")"

    @property
    def resolved_cache_dir(self) -> Path:
        """The converted-voice cache: CHORUS_CACHE_DIR, else $XDG_CACHE_HOME/chorus, else ~/.cache/chorus."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "chorus"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; unknown CHORUS_* names and bad values raise SettingsError."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for name, field in ENV_NAMES.items():
            value = env.get(name)
            if value is None or not value.strip():
                continue  # empty means unset: an empty API_KEY requires no key
            value = value.strip()
            if field in _LIST_FIELDS:
                raw[field] = tuple(part.strip() for part in value.split(",") if part.strip())
            elif field == "log_level":
                raw[field] = value.upper()
            elif field in {"dtype", "batch_decoder", "docs", "metrics"}:
                raw[field] = value.lower()
            elif field in _BOOL_FIELDS:
                raw[field] = _BOOL_WORDS.get(value.lower(), value)
            else:
                raw[field] = value
        unknown = sorted(n for n in env if n.startswith("CHORUS_") and n not in ENV_NAMES)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]}; known CHORUS_* settings: {', '.join(_CHORUS_NAMES)}")
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(_explain(str(exc))) from None
        settings.model_routes()  # refuses a malformed CHORUS_MODELS now, not at load time
        settings.health_paths()
        settings.load_lexicon()  # a lexicon that cannot be used stops the start, naming the problem
        return settings

    def load_lexicon(self) -> Lexicon | None:
        """CHORUS_LEXICON, loaded (``SettingsError`` naming the file and entry when it cannot be used)."""
        if self.lexicon is None:
            return None
        try:
            return load_lexicon(self.lexicon)
        except LexiconError as exc:
            raise SettingsError(f"CHORUS_LEXICON: {exc}") from None

    def health_paths(self) -> tuple[str, ...]:
        """Where the health check answers: ``/ping``, and ``HEALTH_CHECK_PATH`` when RunPod is told to poll
        another path (refused when it would shadow one of Chorus's own routes)."""
        path = (self.health_check_path or "/ping").rstrip("/") or "/"
        if path == "/ping":
            return ("/ping",)
        if path in _OWN_PATHS or path.startswith(_OWN_PREFIXES):
            raise SettingsError(f"HEALTH_CHECK_PATH: {path} is one of Chorus's own routes; pick another path")
        return ("/ping", path)

    def model_routes(self) -> list[tuple[str, str]]:
        """CHORUS_MODELS as (language, model) pairs; empty when one model (CHORUS_MODEL) is served."""
        routes: list[tuple[str, str]] = []
        for entry in self.models:
            language, sep, source = (part.strip() for part in entry.partition("="))
            if not sep or not language or not source:
                raise SettingsError(f"CHORUS_MODELS: {entry!r} is not language=model (e.g. en=facebook/mms-tts-eng)")
            if any(language == seen for seen, _ in routes):
                raise SettingsError(f"CHORUS_MODELS: language {language!r} is routed twice")
            routes.append((language, source))
        if routes and self.model:
            raise SettingsError("set CHORUS_MODEL or CHORUS_MODELS, not both")
        return routes


ENV_NAMES: dict[str, str] = {
    "PORT": "port",
    "PORT_HEALTH": "port_health",
    "HEALTH_CHECK_PATH": "health_check_path",
    "CHORUS_HOST": "host",
    "API_KEY": "api_keys",
    "CHORUS_MODEL": "model",
    "CHORUS_MODELS": "models",
    "CHORUS_DEVICE": "device",
    "CHORUS_DTYPE": "dtype",
    "CHORUS_LANGUAGES": "languages",
    "CHORUS_SPEAKERS_DIR": "speakers_dir",
    "CHORUS_VOCODER": "vocoder",
    "CHORUS_CACHE_DIR": "cache_dir",
    "CHORUS_LEXICON": "lexicon",
    "CHORUS_MAX_TEXT_CHARS": "max_text_chars",
    "CHORUS_MAX_STREAM_CHARS": "max_stream_chars",
    "CHORUS_MAX_CHUNK_CHARS": "max_chunk_chars",
    "CHORUS_MAX_QUEUE": "max_queue",
    "CHORUS_MAX_QUEUE_WAIT_S": "max_queue_wait_s",
    "CHORUS_MAX_BATCH_SIZE": "max_batch_size",
    "CHORUS_MAX_BATCH_WAIT_MS": "max_batch_wait_ms",
    "CHORUS_BATCH_DECODER": "batch_decoder",
    "CHORUS_PROCESSES": "processes",
    "CHORUS_MODEL_PROCESS": "model_process",
    "CHORUS_CUDA_GRAPHS": "cuda_graphs",
    "CHORUS_TORCH_THREADS": "torch_threads",
    "CHORUS_LOG_LEVEL": "log_level",
    "CHORUS_DOCS": "docs",
    "CHORUS_METRICS": "metrics",
    "CHORUS_CORS_ORIGINS": "cors_origins",
    "CHORUS_SWITCH_INTERVAL_MS": "switch_interval_ms",
    "CHORUS_REQUEST_TIMEOUT_S": "request_timeout_s",
    "CHORUS_DRAIN_TIMEOUT_S": "drain_timeout_s",
    "CHORUS_LIVE_IDLE_TIMEOUT_S": "live_idle_timeout_s",
    "CHORUS_WATCHDOG_S": "watchdog_s",
    "CHORUS_PLAYGROUND": "playground",
    "CHORUS_RUNPOD_CONCURRENCY": "runpod_concurrency",
}
_FIELD_TO_ENV = {field: name for name, field in ENV_NAMES.items()}
_CHORUS_NAMES = [n for n in ENV_NAMES if n.startswith("CHORUS_")]
_LIST_FIELDS = {"api_keys", "languages", "cors_origins", "models"}
_BOOL_FIELDS = {"playground", "model_process", "cuda_graphs"}
_OWN_PATHS = {"/", "/generate", "/stats", "/metrics", "/playground", "/v1", "/schema"}
_OWN_PREFIXES = ("/v1/", "/schema/", "/playground/")
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _explain(message: str) -> str:
    """Rewrite msgspec's ``... - at `$.max_queue``` into a sentence naming the environment variable."""
    match = re.search(r"at `\$\.(\w+)", message)
    if not match:
        return f"invalid settings: {message}"
    field = match.group(1)
    reason = message.split(" - at ")[0]
    return f"{_FIELD_TO_ENV.get(field, field)}: {reason}"
