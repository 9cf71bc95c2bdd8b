"""The batch cap when CHORUS_MAX_BATCH_SIZE is unset follows the device the model landed on."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.engine import CPU_MAX_BATCH
from service.settings import Settings


@pytest.mark.parametrize(("configured", "expected"), [(None, CPU_MAX_BATCH), (16, 16), (1, 1)])
def test_an_unset_cap_is_the_cpu_one_on_cpu_and_a_set_one_is_kept(
    tiny_backend: Any, configured: int | None, expected: int
) -> None:
    assert tiny_backend.info.device == "cpu"
    app = create_app(Settings(max_batch_size=configured, log_level="WARNING"), backend=tiny_backend)
    with TestClient(app) as client:
        for _ in range(500):
            if client.get("/ping").status_code == 200:
                break
        assert client.get("/stats").json()["max_batch_size_now"] == expected
        assert app.state.chorus.pipeline.stream_window == expected
