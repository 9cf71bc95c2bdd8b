"""The load generator's arithmetic and its result files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from inference.audio.wav import wav_bytes, wav_header
from service.bench import _numbers, cost_per_million_chars, read_texts
from service.bench.loadgen import Outcome, Target, summarize, wav_seconds
from service.bench.report import markdown_table, write_results

REQUIRED = {"system", "concurrency", "requests", "errors", "throughput_audio_s_per_s", "requests_per_s", "p50_ms",
            "p90_ms", "p99_ms", "ttfb_p50_ms"}  # fmt: skip


def test_wav_seconds_reads_complete_and_streamed_wavs() -> None:
    audio = np.zeros(22050 * 2, dtype=np.float32)
    assert wav_seconds(wav_bytes(audio, 22050)) == pytest.approx(2.0)
    streamed = wav_header(16000, None) + b"\0\0" * 8000  # a stream's header carries no sizes
    assert wav_seconds(streamed) == pytest.approx(0.5)
    assert wav_seconds(b"not a wav") == 0.0


def test_summarize_counts_percentiles_errors_and_batches() -> None:
    outcomes = [Outcome(0.0, 200, latency_s=(i + 1) / 100, ttfb_s=0.005, audio_s=1.5, batch_size=1 + i % 2)
                for i in range(100)]  # fmt: skip
    outcomes += [Outcome(0.0, 429, 0.001, None), Outcome(0.0, 429, 0.001, None), Outcome(0.0, 0, 5.0, None)]
    row = summarize("chorus", outcomes, wall_s=10.0, concurrency=8)
    assert set(row) >= REQUIRED
    assert row["requests"] == 103
    assert row["errors"] == 3
    assert row["errors_by_status"] == {"0": 1, "429": 2}
    assert row["throughput_audio_s_per_s"] == pytest.approx(15.0)
    assert row["requests_per_s"] == pytest.approx(10.0)
    assert row["p50_ms"] == pytest.approx(505.0)
    assert row["p99_ms"] == pytest.approx(990.1)
    assert row["ttfb_p50_ms"] == pytest.approx(5.0)
    assert row["batch_sizes"] == {"1": 50, "2": 50}
    assert row["mode"] == "closed"
    assert summarize("x", [], 1.0, concurrency=None, rate_rps=3.0)["mode"] == "open"


def test_request_bodies_for_both_routes() -> None:
    plain = Target(url="http://x", texts=("Hello.", "Bye."))
    assert plain.body(3) == {"text": "Bye.", "seed": 3}
    assert Target(url="http://x", stream=True, response_format="mp3").body(0)["stream"] is True
    openai = Target(url="http://x", route="/v1/audio/speech", texts=("Hi.",))
    assert openai.body(0)["input"] == "Hi."
    keyed = Target(url="http://x", api_key="k", bearer="b").headers()
    assert keyed["X-API-Key"] == "k"
    assert keyed["Authorization"] == "Bearer b"


def test_an_operators_own_texts_are_read_from_lines_or_json(tmp_path: Path) -> None:
    lines = tmp_path / "texts.txt"
    lines.write_text("Hello there.\n\n  Your order has shipped.  \n", encoding="utf-8")
    assert read_texts(lines) == ("Hello there.", "Your order has shipped.")
    listed = tmp_path / "texts.json"
    listed.write_text(json.dumps(["One.\nTwo lines.", " ", "Three."]), encoding="utf-8")
    assert read_texts(listed) == ("One.\nTwo lines.", "Three.")  # JSON keeps multi-line texts whole
    for content, suffix, message in (
        ("", ".txt", "holds no texts"),
        ('{"a": 1}', ".json", "must hold a JSON list of strings"),
        ("[1, 2]", ".json", "must hold a JSON list of strings"),
        ("[", ".json", "is not valid JSON"),
    ):
        bad = tmp_path / f"bad{suffix}"
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            read_texts(bad)
    with pytest.raises(ValueError, match="cannot read"):
        read_texts(tmp_path / "missing.txt")


def test_bad_number_lists_are_refused() -> None:
    assert _numbers("1,4, 16", int) == [1, 4, 16]
    for text in ("1,x", "0,2", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected|positive"):
            _numbers(text, int)


def test_results_are_json_markdown_and_plots(tmp_path: Path) -> None:
    rows = [
        summarize(system, [Outcome(0, 200, 0.1 * c, 0.05, 2.0, c)] * 10, 1.0, concurrency=c)
        for system in ("chorus", "naive")
        for c in (1, 4)
    ]
    document = {"name": "t", "machine": {"cpu": "CPU", "cores": 2, "gpu": None}, "model": "m", "rows": rows}
    written = write_results(tmp_path / "t.json", document)
    assert [p.name for p in written] == ["t.json", "t.md", "t-throughput.png", "t-p99.png"]
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == rows
    assert (tmp_path / "t-throughput.png").read_bytes()[:4] == b"\x89PNG"
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| system | concurrency |")
    assert "| naive | 4 |" in table
    assert "rate (req/s)" not in table  # no open-loop rows: no empty column


def test_cost_per_million_characters() -> None:
    # $3.60 an hour at 1000 characters a second: 3.6 M characters an hour, so $1 per million.
    assert cost_per_million_chars(3.6, 1000.0) == pytest.approx(1.0)
    assert cost_per_million_chars(3.6, 0.0) is None


@pytest.mark.parametrize(
    ("levels", "expected"),
    [([1, 8, 32, 64], [(64, 4.0), (32, 4 / 3), (8, 4 / 3), (1, 4 / 3)]), ([8], [(8, 8.0)]), ([], [(4, 8.0)])],
)
def test_the_warm_up_visits_every_concurrency_of_the_sweep_highest_first(
    monkeypatch: pytest.MonkeyPatch, levels: list[int], expected: list[tuple[int, float]]
) -> None:
    # Batch shapes differ by level; a server that prepares per shape must meet them all before measuring.
    import asyncio

    import service.bench as bench

    calls: list[tuple[int, float, int]] = []

    async def record(target: Target, concurrency: int, *, duration_s: float, first_index: int, **_: object) -> None:
        calls.append((concurrency, duration_s, first_index))

    monkeypatch.setattr(bench, "closed_loop", record)
    asyncio.run(bench.warm_up(Target(url="http://127.0.0.1:9"), "chorus", levels, 8.0))
    assert [(c, pytest.approx(d)) for c, d, _ in calls] == expected
    assert all(first == bench.WARMUP_FIRST_INDEX for *_, first in calls)
    calls.clear()
    asyncio.run(bench.warm_up(Target(url="http://127.0.0.1:9"), "chorus", levels, 0.0))
    assert calls == []
