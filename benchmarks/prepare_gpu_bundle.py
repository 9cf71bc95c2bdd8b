"""Build ``.gpu/`` (git-ignored): what ``benchmarks/gpu_check.sh`` needs on a GPU machine with no network.

* ``.gpu/voice/``: the embedded voice, converted, with weights stored in fp16 to halve the transfer
  (the backend casts them back to fp32 at load; fp16 storage changes samples by ~1e-3 at most);
* ``.gpu/piper/``: piper-tts's espeak bridge with the English espeak-ng data only;
* ``.whl/``: wheels a stock CUDA PyTorch image lacks: litestar, msgspec, granian and their needs for the
  service, FastAPI, uvicorn, LitServe and soundfile for the peers of ``gpu_check.sh --compare``, and pytest
  for the CUDA-only tests (``gpu_check.sh --tests``).

Run: ``python benchmarks/prepare_gpu_bundle.py`` (then carry ``.gpu`` and ``.whl``). ``--python-version``
picks the wheels' Python (3.12, the GPU image's; the test of the bundle here uses this machine's).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = [
    "litestar==2.25.0",
    "msgspec==0.22.0",
    "granian==2.8.9",
    "litestar-htmx==0.5.0",
    "polyfactory==3.5.0",
    "faker==40.63.0",
    "multipart==2.0.1",
    "rich-click==1.9.9",
    "sniffio==1.3.1",
    "sentencex==1.0.32",
    "soxr==1.1.0",
    "httpx==0.28.1",
    "httpcore==1.0.9",
    "h11==0.16.0",
    "num2words==0.5.14",
    "sentencepiece==0.2.1",
    "websockets==17.4",  # chorus bench --live (gpu_check.sh --live)
    # the peers (benchmarks/peers): never product dependencies
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "opentelemetry-api==1.45.2",
    "uvicorn==0.54.0",
    "litserve==0.2.19",
    "pyzmq==27.3.0",
    "soundfile==0.14.0",
    "cffi==2.1.1",
    "pycparser==3.12",
    # the CUDA-only tests (gpu_check.sh --tests): pytest with the plugins pyproject.toml's settings name
    "pytest==9.2.0",
    "pluggy==1.7.0",
    "iniconfig==2.3.1",
    "pygments==2.21.0",
    "pytest-timeout==2.4.0",
    "pytest-asyncio==1.5.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-version", default="3.12", help="the Python the wheels are for")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from inference.backends import DEFAULT_VOICE, ModelSpec, resolve_model_path

    bundle = ROOT / ".gpu"
    shutil.rmtree(bundle, ignore_errors=True)
    source, _ = resolve_model_path(ModelSpec(cache_dir=Path.home() / ".cache" / "chorus"))
    voice = bundle / "voice"
    voice.mkdir(parents=True)
    for name in ("config.json", "piper.json"):
        shutil.copy(Path(source) / name, voice / name)
    weights = load_file(str(Path(source) / "model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(voice / "model.safetensors"), {"format": "pt"})
    print(f"{DEFAULT_VOICE}: {sum(v.numel() for v in weights.values()) / 1e6:.1f} M parameters, stored fp16")

    spec = importlib.util.find_spec("piper")
    assert spec is not None
    assert spec.submodule_search_locations
    piper_src = Path(next(iter(spec.submodule_search_locations)))
    piper_dst = bundle / "piper"
    piper_dst.mkdir()
    shutil.copy(piper_src / "espeakbridge.so", piper_dst / "espeakbridge.so")
    shutil.copytree(
        piper_src / "espeak-ng-data",
        piper_dst / "espeak-ng-data",
        ignore=lambda _dir, names: [n for n in names if n.endswith("_dict") and n != "en_dict"],
    )

    wheels = ROOT / ".whl"
    shutil.rmtree(wheels, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    command += ["--python-version", args.python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *WHEELS], check=True)
    total = sum(p.stat().st_size for p in [*bundle.rglob("*"), *wheels.rglob("*")] if p.is_file())
    print(f"bundle: {total / 2**20:.1f} MiB in .gpu and .whl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
