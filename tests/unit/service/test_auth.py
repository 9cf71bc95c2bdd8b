from __future__ import annotations

from service.auth import key_matches


def test_any_configured_key_matches() -> None:
    keys = ("old-key", "new-key")
    assert key_matches("old-key", keys)
    assert key_matches("new-key", keys)


def test_near_misses_do_not_match() -> None:
    keys = ("secret",)
    for attempt in ("", "secre", "secret ", "Secret", "secretsecret", "sécret"):
        assert not key_matches(attempt, keys)


def test_no_keys_means_nothing_matches() -> None:
    assert not key_matches("anything", ())
