"""The live benchmark's playback model: what a caller hears, and when it stalls."""

from __future__ import annotations

import pytest

from service.bench.live import LiveOutcome, _url, playback_stalls, summarize_live
from service.bench.loadgen import Target


def test_audio_that_arrives_before_it_is_needed_never_stalls() -> None:
    # 2 s of audio at t=1, the next 1 s at t=2.5 (needed at 3.02): no stall; heard by 4.02.
    stalled, heard = playback_stalls([(1.0, 2.0), (2.5, 1.0)])
    assert stalled == 0.0
    assert heard == pytest.approx(4.02)


def test_audio_that_arrives_late_stalls_for_the_gap() -> None:
    # 0.5 s of audio at t=1 (played 1.02-1.52), the next at t=2: 0.48 s of silence the caller waits through.
    stalled, heard = playback_stalls([(1.0, 0.5), (2.0, 1.0), (2.5, 1.0)])
    assert stalled == pytest.approx(0.48)
    assert heard == pytest.approx(4.0)  # 2.0 + 1.0, then the third is already there


def test_no_audio_is_heard_at_once() -> None:
    assert playback_stalls([]) == (0.0, 0.0)


def test_a_row_counts_errors_by_close_code_and_stalls_of_good_sessions_only() -> None:
    good = LiveOutcome(ok=True, close_code=1000, ttfa_s=0.2, audio_s=3.0, stall_s=0.0, chars=60)
    stalled = LiveOutcome(ok=True, close_code=1000, ttfa_s=0.4, audio_s=3.0, stall_s=0.5, chars=60)
    refused = LiveOutcome(ok=False, close_code=1013)
    row = summarize_live("chorus", [good, stalled, refused], 6.0, sessions=2)
    assert row["requests"] == 3
    assert row["errors"] == 1
    assert row["errors_by_close_code"] == {"1013": 1}
    assert row["stalled_sessions"] == 1
    assert row["stall_s"] == 0.5
    assert row["throughput_audio_s_per_s"] == 1.0
    assert row["chars_per_s"] == 20.0
    assert row["ttfa_p50_ms"] == pytest.approx(300.0)
    assert summarize_live("chorus", [good], 6.0, sessions=1)["errors_by_close_code"] is None


def test_the_sessions_chunking_goes_in_the_url_only_when_asked() -> None:
    assert (
        _url(Target(url="https://h.example"))
        == "wss://h.example/v1/audio/speech/stream-input?response_format=pcm&seed=0"
    )
    assert _url(Target(url="http://h:8000", chunking="clause")).endswith("?response_format=pcm&seed=0&chunking=clause")
