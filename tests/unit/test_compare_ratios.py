"""The side-by-side benchmark's target ratios (``benchmarks/compare.py``), from rows as it writes them."""

from __future__ import annotations

from typing import Any

from benchmarks.compare import ratios


def row(system: str, concurrency: int, throughput: float, p50_ms: float = 100.0) -> dict[str, Any]:
    return {
        "system": system,
        "mode": "closed",
        "concurrency": concurrency,
        "throughput_audio_s_per_s": throughput,
        "p50_ms": p50_ms,
        "ttfb_p50_ms": None,
    }


def test_ratios_name_each_target_and_every_chorus_configuration_against_the_peers() -> None:
    rows = [
        row("raw", 1, 50.0, p50_ms=80.0),
        row("raw", 32, 1000.0),
        row("chorus", 1, 45.0, p50_ms=88.0),
        row("chorus", 32, 900.0),
        row("naive", 1, 40.0),
        row("naive", 32, 45.0),
        row("litserve", 32, 600.0),
        row("chorus-nobatch", 32, 100.0),
        row("chorus-bf16", 32, 1500.0),
        row("chorus-bf16-b64", 32, 1800.0),
        {**row("chorus-stream", 1, 44.0, p50_ms=90.0), "ttfb_p50_ms": 30.0},
    ]
    out = ratios(rows)
    assert out["chorus_vs_raw_at_saturation"] == 0.9
    assert out["chorus_p50_c1_vs_raw_single"] == 1.1
    assert out["chorus_throughput_vs_peer_by_concurrency"] == {
        "naive": {"1": 1.12, "32": 20.0},
        "litserve": {"32": 1.5},
        "chorus-nobatch": {"32": 9.0},
    }
    # bf16 and a --variant server are set against the peers too; nobatch and stream are not configurations
    # anyone would pick for throughput.
    assert out["other_chorus_throughput_vs_peer_by_concurrency"] == {
        "chorus-bf16": {"naive": {"32": 33.33}, "litserve": {"32": 2.5}},
        "chorus-bf16-b64": {"naive": {"32": 40.0}, "litserve": {"32": 3.0}},
    }
    assert out["chorus_bf16_vs_chorus_by_concurrency"] == {"32": 1.67}
    assert out["stream_first_audio_vs_whole_c1"] == 0.333


def test_ratios_leave_out_what_did_not_run() -> None:
    out = ratios([row("chorus", 1, 45.0), row("naive", 1, 40.0)])
    assert "chorus_vs_raw_at_saturation" not in out
    assert "other_chorus_throughput_vs_peer_by_concurrency" not in out
    assert out["chorus_throughput_vs_peer_by_concurrency"] == {"naive": {"1": 1.12}}
