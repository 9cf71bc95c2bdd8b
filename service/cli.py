"""The ``chorus`` command: ``serve``, ``runpod-worker``, ``bench`` and ``convert-piper``."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from service.settings import ENV_NAMES, Settings, SettingsError

__all__ = ["main"]

#: ``chorus serve`` flags and the environment variable each one sets (the flag wins).
SERVE_FLAGS = {"port": "PORT", "host": "CHORUS_HOST", "model": "CHORUS_MODEL", "device": "CHORUS_DEVICE"}


#: What an unset variable means, where it is not simply "none".
UNSET_MEANS = {
    "PORT_HEALTH": "unset (= PORT)",
    "HEALTH_CHECK_PATH": "unset (/ping only)",
    "API_KEY": "unset (no key required)",
    "CHORUS_MODEL": "unset (the embedded voice)",
    "CHORUS_CACHE_DIR": "unset ($XDG_CACHE_HOME/chorus)",
    "CHORUS_LEXICON": "unset (no lexicon)",
    "CHORUS_MAX_BATCH_SIZE": "unset (64 on a GPU, 4 on CPU)",
    "CHORUS_MAX_QUEUE_WAIT_S": "unset (no bound but CHORUS_MAX_QUEUE)",
    "CHORUS_TORCH_THREADS": "unset (torch's default)",
    "CHORUS_SWITCH_INTERVAL_MS": "unset (Python's 5)",
    "CHORUS_RUNPOD_CONCURRENCY": "unset (2 x the batch size, 32 when that is unset)",
}


def settings_epilog() -> str:
    """Every setting's environment variable and its default, for ``chorus serve --help``."""
    defaults = Settings()
    lines = ["settings, read from the environment (the README's Configuration says what each does):"]
    for name, field in ENV_NAMES.items():
        value = getattr(defaults, field)
        shown = (
            UNSET_MEANS.get(name, "unset") if value is None or value == () else ("on" if value is True else str(value))
        )
        lines.append(f"  {name:<27} {shown}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    for flag, name in SERVE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[name] = str(value)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    from granian import Granian
    from granian.constants import Interfaces

    from service.engine import start_model_servers

    # Each process holds the model and its batcher; granian's threads serve the HTTP side (CHORUS_PROCESSES).
    # With CHORUS_MODEL_PROCESS too, they share one model process per model, started here, before them.
    shared = settings.model_process and settings.processes > 1
    folder = Path(tempfile.mkdtemp(prefix="chorus-models-")) if shared else None
    servers = start_model_servers(settings, folder) if folder is not None else []
    server = Granian(
        "service.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=settings.processes,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
    )
    try:
        server.serve()
    finally:
        for model_server in servers:
            model_server.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _convert(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from inference.backends.piper import convert_piper_voice
    from inference.errors import ModelLoadError

    try:
        out = convert_piper_voice(args.voice, args.out_dir)
    except ModelLoadError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 1
    print(f"converted {args.voice} -> {out}; serve it with CHORUS_MODEL={out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chorus`` console script."""
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus text-to-speech server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API (settings come from the environment)",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--port", type=int, default=None, help="sets PORT")
    serve.add_argument("--host", default=None, help="sets CHORUS_HOST (the address to bind)")
    serve.add_argument("--model", default=None, help="sets CHORUS_MODEL: a hub id, checkpoint folder or Piper .onnx")
    serve.add_argument("--device", default=None, help="sets CHORUS_DEVICE: auto, cpu, cuda, cuda:1, ...")
    serve.set_defaults(func=_serve)
    convert = sub.add_parser("convert-piper", help="convert a Piper voice into a transformers checkpoint")
    convert.add_argument("voice", help="the voice's .onnx file (its .onnx.json must sit beside it)")
    convert.add_argument("out_dir", help="folder to write the checkpoint into")
    convert.set_defaults(func=_convert)
    worker = sub.add_parser(
        "runpod-worker",
        help="RunPod queue mode: the runpod SDK's worker on the same engine (needs chorus-tts[runpod]); "
        "SDK flags such as --test_input JSON and --rp_serve_api pass through",
    )
    worker.set_defaults(func=None)
    bench = sub.add_parser("bench", help="load-test a Chorus URL; `chorus bench --help` for its options")
    bench.set_defaults(func=None)
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["runpod-worker"]:
        # The SDK parses its own flags; argparse would refuse them.
        from service.runpod_worker import run_worker

        return run_worker(arguments[1:])
    if arguments[:1] == ["bench"]:
        from service.bench import main as bench_main

        return bench_main(arguments[1:])
    args = parser.parse_args(arguments)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
