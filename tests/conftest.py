"""Shared fixtures: a tiny real VITS checkpoint, loaded through the production path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the Hugging Face hub; say so to every library that might try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.tiny_model import write_tiny_vits


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where CUDA is absent."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ``VitsModel`` + ``VitsTokenizer`` written with ``save_pretrained``."""
    return write_tiny_vits(tmp_path_factory.mktemp("tiny-vits"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_vits_dir: Path) -> object:
    """The tiny checkpoint loaded by ``load_backend``, exactly as ``CHORUS_MODEL=<dir>`` would."""
    from inference.backends import ModelSpec, load_backend

    return load_backend(ModelSpec(model=str(tiny_vits_dir), device="cpu"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted-voice cache shared by the tests that need the embedded voice (converted once)."""
    return tmp_path_factory.mktemp("chorus-cache")
