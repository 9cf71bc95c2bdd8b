from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.testing import TestClient

from service import auth
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


def test_the_guard_runs_on_the_event_loop_not_in_a_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # Litestar runs a plain-function guard through a thread pool: a thread round trip on every request.
    threads: dict[str, int] = {}

    def recording_match(supplied: str, keys: tuple[str, ...]) -> bool:
        threads["guard"] = threading.get_ident()
        return key_matches(supplied, keys)

    @get("/where")
    async def where() -> None:
        threads["handler"] = threading.get_ident()

    monkeypatch.setattr(auth, "key_matches", recording_match)
    chorus = SimpleNamespace(settings=SimpleNamespace(api_keys=("k",)))
    app = Litestar(route_handlers=[where], guards=[auth.require_api_key], state=State({"chorus": chorus}))
    with TestClient(app) as client:
        assert client.get("/where").status_code == 401
        assert client.get("/where", headers={"X-API-Key": "k"}).status_code == 200
    assert threads["guard"] == threads["handler"]
