"""GET /metrics (Prometheus) and the one-JSON-line-per-request access log."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.logs import BatchedStreamHandler
from service.settings import Settings
from tests.helpers import ping_after_loading

KEY = "metrics-key"
SECRET_TEXT = "the words nobody may log"


@pytest.fixture
async def client(tiny_backend: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(Settings(api_keys=(KEY,)), backend=tiny_backend)
    async with AsyncTestClient(app) as test_client:
        assert (await ping_after_loading(test_client)).status_code == 200
        yield test_client


def sample(text: str, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in metrics")


async def test_metrics_count_requests_batches_audio_and_drops(client: AsyncTestClient[Any]) -> None:
    headers = {"X-API-Key": KEY}
    for _ in range(3):
        assert (await client.post("/generate", json={"text": "counted speech"}, headers=headers)).status_code == 200
    await client.post("/generate", json={"text": ""}, headers=headers)
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # the charset once
    text = response.text
    assert sample(text, "chorus_requests_total", route="/generate", status="200") == 3
    assert sample(text, "chorus_requests_total", route="/generate", status="422") == 1
    assert sample(text, "chorus_batch_size_count") >= 3
    assert sample(text, "chorus_audio_seconds_total") > 0
    assert sample(text, "chorus_queue_seconds_count") == 3
    assert sample(text, "chorus_request_seconds_count", route="/generate") == 4
    assert sample(text, "chorus_jobs_dropped_total", reason="deadline") == 0
    assert sample(text, "chorus_model_load_seconds") > 0
    assert sample(text, "chorus_queue_depth") == 0


async def test_metrics_follow_the_key_rule(client: AsyncTestClient[Any], tiny_backend: Any) -> None:
    assert (await client.get("/metrics")).status_code == 401
    app = create_app(Settings(api_keys=(KEY,), metrics="public"), backend=tiny_backend)
    async with AsyncTestClient(app) as public:
        await ping_after_loading(public)
        assert (await public.get("/metrics")).status_code == 200


async def test_one_json_line_per_request_without_text_or_key(
    client: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chorus.access"):
        response = await client.post(
            "/generate", json={"text": SECRET_TEXT}, headers={"X-API-Key": KEY, "X-Request-Id": "req-42"}
        )
        await client.post("/generate", json={"text": "hi"}, headers={"X-API-Key": "wrong-key"})
    lines = [r.getMessage() for r in caplog.records if r.name == "chorus.access"]
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["request_id"] == "req-42"
    assert record["route"] == "/generate"
    assert record["status"] == 200
    assert record["text_chars"] == len(SECRET_TEXT)
    assert record["audio_s"] == pytest.approx(float(response.headers["x-audio-duration-s"]), abs=1e-3)
    assert {"queue_ms", "inference_ms", "batch_size"} <= set(record)
    assert json.loads(lines[1])["status"] == 401
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_TEXT not in everything
    assert KEY not in everything
    assert "wrong-key" not in everything


async def test_log_level_setting_reaches_the_access_log(tiny_backend: Any) -> None:
    """CHORUS_LOG_LEVEL=WARNING silences the per-request access log (Litestar configures the root logger)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        app = create_app(Settings(log_level="WARNING"), backend=tiny_backend)
        async with AsyncTestClient(app) as quiet:
            await ping_after_loading(quiet)
            assert not logging.getLogger("chorus.access").isEnabledFor(logging.INFO)
        app = create_app(Settings(log_level="INFO"), backend=tiny_backend)
        async with AsyncTestClient(app) as chatty:
            await ping_after_loading(chatty)
            assert logging.getLogger("chorus.access").isEnabledFor(logging.INFO)
            # ... through the handler that does not cost the event loop a thread wake-up per line
            assert [type(h) for h in root.handlers] == [BatchedStreamHandler]
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


async def test_requests_are_counted_under_route_templates_never_raw_paths(client: AsyncTestClient[Any]) -> None:
    headers = {"X-API-Key": KEY}
    assert (await client.get("/v1/models/tts-1", headers=headers)).status_code == 200
    assert (await client.get("/v1/models/no-such-model", headers=headers)).status_code == 404
    for path in ("/random-1", "/random-2", "/generate/../x"):
        await client.get(path, headers=headers)
    text = (await client.get("/metrics", headers=headers)).text
    assert sample(text, "chorus_requests_total", route="/v1/models/{model}", status="200") == 1
    assert sample(text, "chorus_requests_total", route="/v1/models/{model}", status="404") == 1
    assert sample(text, "chorus_requests_total", route="other", status="404") == 3  # one label, not three
    assert "no-such-model" not in text
    assert "random" not in text
