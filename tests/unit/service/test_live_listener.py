"""``service.live.Listener``: what a live session can tell of its listener's audio in hand (``auto`` chunking)."""

from __future__ import annotations

import pytest

from service.live import Listener


def test_a_new_session_is_running_low() -> None:
    listener = Listener()
    assert listener.in_hand(100.0) == 0.0
    assert listener.running_low(100.0)  # nothing to play yet: the first clause should go at once


def test_audio_sent_plays_down_in_real_time() -> None:
    listener = Listener()
    listener.given(30)
    listener.sent(30, 3.0, given_at=9.8, now=10.0)  # came back in 0.2 s
    assert listener.latency_s == pytest.approx(0.5 + 0.3 * (0.2 - 0.5))
    assert listener.in_hand(10.0) == pytest.approx(3.0)
    assert listener.in_hand(12.0) == pytest.approx(1.0)
    assert listener.in_hand(20.0) == 0.0  # played out, never negative
    low_water = Listener.LOW_WATER_S + 2 * listener.latency_s
    assert not listener.running_low(10.0)
    assert listener.running_low(13.0 - low_water + 0.01)
    assert not listener.running_low(13.0 - low_water - 0.01)


def test_text_being_synthesized_counts_at_the_sessions_own_speaking_rate() -> None:
    listener = Listener()
    listener.given(15)
    assert listener.in_hand(0.0) == pytest.approx(15 * Listener.SECONDS_PER_CHAR)  # a default rate at first
    listener.sent(15, 3.0, given_at=0.0, now=0.0)  # this voice: 0.2 s a character
    listener.given(20)
    assert listener.in_hand(0.0) == pytest.approx(3.0 + 20 * 0.2)
    listener.dropped(50)  # (never below nothing)
    assert listener.queued_chars == 0


def test_a_gap_restarts_the_clock() -> None:
    listener = Listener()
    listener.sent(10, 1.0, given_at=0.0, now=0.0)
    listener.sent(10, 1.0, given_at=4.5, now=5.0)  # the listener heard silence from 1 s to 5 s
    assert listener.in_hand(5.0) == pytest.approx(1.0)
    listener.sent(10, 2.0, given_at=5.0, now=5.5)  # arrives while the last still plays: queued behind it
    assert listener.in_hand(5.5) == pytest.approx(2.5)


def test_a_clear_leaves_nothing_in_hand() -> None:
    listener = Listener()
    listener.sent(10, 5.0, given_at=0.0, now=0.0)
    listener.given(40)
    listener.cleared(1.0)
    assert listener.in_hand(1.0) == 0.0
    assert listener.queued_chars == 0


def test_lateness_counts_only_a_wait_for_audio_whose_text_the_engine_had() -> None:
    listener = Listener()
    assert listener.sent(10, 1.0, given_at=0.0, now=0.5) == 0.0  # the first audio: nothing was playing
    # Plays until 1.5. The next text came at 1.0, before that ran out; its audio went out at 2.0: 0.5 s late.
    assert listener.sent(10, 1.0, given_at=1.0, now=2.0) == pytest.approx(0.5)
    # Plays until 3.0. Text that came only at 3.5 (the writer paused) and went out at 3.8: not the engine's.
    assert listener.sent(10, 1.0, given_at=3.5, now=3.8) == 0.0
    # Plays until 4.8: audio that arrives while the last still plays is on time.
    assert listener.sent(10, 1.0, given_at=4.0, now=4.5) == 0.0
