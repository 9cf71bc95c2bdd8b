"""Transparent huge pages for torch's CPU tensors: when Chorus turns them on, and that torch honours it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.backends import TORCH_THP, prefer_huge_pages

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.fixture
def mode_file(tmp_path: Path) -> Path:
    return tmp_path / "enabled"


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(TORCH_THP, raising=False)
    return monkeypatch


@pytest.mark.parametrize("mode", ["always [madvise] never", "[always] madvise never"])
def test_on_where_the_kernel_offers_them_and_torch_is_not_loaded_yet(
    unset: pytest.MonkeyPatch, mode_file: Path, mode: str
) -> None:
    mode_file.write_text(mode + "\n")
    unset.delitem(sys.modules, "torch")  # put back after the test, untouched
    assert prefer_huge_pages(mode_file) is True
    assert os.environ[TORCH_THP] == "1"


def test_too_late_once_torch_is_loaded(unset: pytest.MonkeyPatch, mode_file: Path) -> None:
    import torch  # noqa: F401 (loaded: it may have read the variable already)

    mode_file.write_text("always [madvise] never\n")
    assert prefer_huge_pages(mode_file) is False
    assert TORCH_THP not in os.environ


@pytest.mark.parametrize("mode", ["always madvise [never]\n", None])
def test_off_where_the_kernel_has_none(unset: pytest.MonkeyPatch, mode_file: Path, mode: str | None) -> None:
    if mode is not None:
        mode_file.write_text(mode)
    unset.delitem(sys.modules, "torch")
    assert prefer_huge_pages(mode_file) is False
    assert TORCH_THP not in os.environ


@pytest.mark.parametrize(("value", "on"), [("0", False), ("", False), ("1", True)])
def test_the_operators_setting_wins(monkeypatch: pytest.MonkeyPatch, mode_file: Path, value: str, on: bool) -> None:
    monkeypatch.setenv(TORCH_THP, value)
    mode_file.write_text("always [madvise] never\n")
    monkeypatch.delitem(sys.modules, "torch")
    assert prefer_huge_pages(mode_file) is on
    assert os.environ[TORCH_THP] == value


# 20 tensors of 64 MiB written once each: 327,680 faults on 4 KiB pages, 640 on 2 MiB ones.
FAULTS = """
import resource
from inference.backends import prefer_huge_pages
prefer_huge_pages()
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(setting: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != TORCH_THP}
    if setting is not None:
        env[TORCH_THP] = setting
    done = subprocess.run(
        [sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout)


@pytest.mark.skipif(
    not THP_MODE.is_file() or "[madvise]" not in THP_MODE.read_text(),
    reason="only a madvise kernel tells torch's choice apart ('never' has no huge pages, 'always' gives them anyway)",
)
def test_torch_honours_it() -> None:
    """The variable is torch's, not ours: if a torch release drops it, this fails."""
    small_pages, chosen = page_faults("0"), page_faults(None)
    assert small_pages > 100_000
    assert chosen < small_pages / 10
