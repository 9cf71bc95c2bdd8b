"""The app in process (Litestar's AsyncTestClient) on the tiny real VITS model."""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings
from tests.helpers import ping_after_loading

KEY = "test-key-123"


async def wait_ready(client: AsyncTestClient[Any]) -> None:
    response = await ping_after_loading(client)
    assert response.status_code == 200, response.text


@pytest.fixture
async def client(tiny_backend: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(Settings(max_text_chars=200), backend=tiny_backend)
    async with AsyncTestClient(app) as test_client:
        await wait_ready(test_client)
        yield test_client


@pytest.fixture
async def keyed_client(tiny_backend: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(Settings(api_keys=(KEY, "rotated-key")), backend=tiny_backend)
    async with AsyncTestClient(app) as test_client:
        await wait_ready(test_client)
        yield test_client


def parse_wav(data: bytes) -> tuple[int, int]:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        return wav.getframerate(), wav.getnframes()


# ---------------------------------------------------------------------------------------------- health


class GatedBackend:
    """The real tiny backend, whose warm-up waits for the test to open a gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def warmup(self) -> None:
        self.gate.wait(10)
        self.inner.warmup()


async def test_a_shutdown_while_loading_waits_for_the_model_thread(tiny_backend: Any) -> None:
    """A process that exits with its model thread inside torch aborts (exit code 134), not 0."""
    loading = GatedBackend(tiny_backend)
    warmed = threading.Event()
    original = loading.warmup

    def warmup() -> None:
        original()
        warmed.set()

    loading.warmup = warmup  # type: ignore[method-assign]
    async with AsyncTestClient(create_app(Settings(), backend=loading)) as test_client:
        assert (await test_client.get("/ping")).status_code == 204
        threading.Timer(0.3, loading.gate.set).start()  # the warm-up ends while the app shuts down
    assert warmed.is_set()  # the shutdown waited for it


async def test_ping_is_a_bare_204_while_loading_then_200(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    app = create_app(Settings(), backend=gated)  # type: ignore[arg-type]
    async with AsyncTestClient(app) as client:
        loading = await client.get("/ping")
        assert loading.status_code == 204
        assert loading.content == b""
        assert "content-type" not in loading.headers
        refused = await client.post("/generate", json={"text": "hello"})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        gated.gate.set()
        await wait_ready(client)
        ready = await client.get("/ping")
        assert ready.json() == {"status": "ok"}


async def test_head_and_runpods_health_check_path_answer_like_ping_in_every_phase(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    app = create_app(Settings(health_check_path="/health", api_keys=(KEY,)), backend=gated)  # type: ignore[arg-type]
    async with AsyncTestClient(app) as client:
        for path in ("/ping", "/health", "/health/"):
            assert (await client.get(path)).status_code == 204
            loading = await client.head(path)
            assert (loading.status_code, loading.content) == (204, b"")
        gated.gate.set()
        await wait_ready(client)
        for path in ("/ping", "/health"):
            ready = await client.get(path)  # no key: RunPod's balancer never sends the app's key
            assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
            head = await client.head(path)
            assert (head.status_code, head.content) == (200, b"")
            assert head.headers["content-length"] == str(len(ready.content))  # what GET would send
            assert head.headers["content-type"] == "application/json"
        metrics = (await client.get("/metrics", headers={"X-API-Key": KEY})).text
        counted = re.search(r'chorus_requests_total\{route="/ping",status="204"\} (\d+)', metrics)
        assert counted is not None
        assert int(counted.group(1)) >= 6  # /health and HEAD counted as the health check they are
        assert 'route="other"' not in metrics


async def test_a_model_that_fails_to_load_answers_503_never_200(tmp_path: Path) -> None:
    app = create_app(Settings(model=str(tmp_path / "missing-model")))
    async with AsyncTestClient(app) as client:
        response = await ping_after_loading(client)
        assert response.status_code == 503
        assert response.json()["status"] == "error"
        assert "missing-model" in response.json()["detail"]
        generate = await client.post("/generate", json={"text": "hello"})
        assert generate.status_code == 503


# ---------------------------------------------------------------------------------------------- generate


async def test_generate_returns_a_complete_wav_with_batch_headers(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/generate", json={"text": "Hello world!"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    rate, frames = parse_wav(response.content)
    assert rate == 16000
    assert frames > 0
    assert int(response.headers["content-length"]) == len(response.content) == 44 + 2 * frames
    assert int(response.headers["x-batch-size"]) >= 1
    assert float(response.headers["x-queue-time-ms"]) >= 0
    assert float(response.headers["x-inference-time-ms"]) > 0
    assert float(response.headers["x-audio-duration-s"]) == pytest.approx(frames / rate, abs=1e-3)
    assert response.headers["x-request-id"]


async def test_the_full_seed_request_shape_works(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/generate", json={"text": "Hello world!", "language": "en", "temperature": 0.7})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"


async def test_same_seed_same_audio_and_temperature_zero_is_deterministic(client: AsyncTestClient[Any]) -> None:
    body = {"text": "seeded speech", "seed": 42, "temperature": 1.0}
    first = await client.post("/generate", json=body)
    second = await client.post("/generate", json=body)
    other = await client.post("/generate", json={**body, "seed": 43})
    assert first.content == second.content
    assert first.content != other.content
    assert first.headers["x-seed"] == "42"
    cold = [await client.post("/generate", json={"text": "cold", "temperature": 0}) for _ in range(2)]
    assert cold[0].content == cold[1].content


async def test_speed_changes_the_duration(client: AsyncTestClient[Any]) -> None:
    text = "a sentence long enough to time"
    normal = await client.post("/generate", json={"text": text, "temperature": 0})
    fast = await client.post("/generate", json={"text": text, "temperature": 0, "speed": 2.0})
    assert float(fast.headers["x-audio-duration-s"]) < float(normal.headers["x-audio-duration-s"])


async def test_a_client_request_id_is_echoed_and_a_bad_one_replaced(client: AsyncTestClient[Any]) -> None:
    echoed = await client.post("/generate", json={"text": "hi"}, headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    replaced = await client.post("/generate", json={"text": "hi"}, headers={"X-Request-Id": "bad id\twith junk"})
    assert replaced.headers["x-request-id"] != "bad id\twith junk"


async def test_the_authorization_header_is_ignored(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/generate", json={"text": "Hello world!"}, headers={"Authorization": "Bearer rp_not_ours"}
    )
    assert response.status_code == 200


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 400, "text"),
        ({"text": ""}, 422, "empty"),
        ({"text": "   \n\t "}, 422, "empty"),
        ({"text": "\x00\x01"}, 422, "empty"),
        ({"text": "x" * 201}, 422, "limit is 200"),
        ({"text": 42}, 400, "text"),
        ({"text": "hi", "temperature": "hot"}, 400, "temperature"),
        ({"text": "hi", "temperature": 2.5}, 400, "temperature"),
        ({"text": "hi", "temperature": -0.1}, 400, "temperature"),
        ({"text": "hi", "speed": 0.1}, 400, "speed"),
        ({"text": "hi", "speed": 5}, 400, "speed"),
        ({"text": "hi", "seed": -1}, 400, "seed"),
        ({"text": "hi", "seed": 2**64}, 400, "seed"),
        ({"text": "hi", "language": "fr"}, 422, "served languages: eng, en"),
        ({"text": "🙂🙂🙂", "text_format": "plain"}, 422, "nothing this model can pronounce"),
        ({"text": "🙂🙂🙂"}, 422, "nothing to say once its Markdown is read"),
        ({"text": "hi", "voice": "../../etc/passwd"}, 422, "not served"),
    ],
)
async def test_bad_input_gets_a_4xx_json_error_naming_the_problem(
    client: AsyncTestClient[Any], body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.post("/generate", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]  # the detail itself names it, not only Litestar's "extra"
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "the request body is not valid JSON (JSON is malformed: invalid character"),
        (b'{"text": "unterminated', "the request body is not valid JSON (Input data was truncated)"),
        (b"\xff\xfe\x00garbage", "the request body is not valid JSON (JSON is malformed: invalid character"),
        (b"[1, 2]", "the request body must be a JSON object (Expected `object`, got `array`)"),
        (b"null", "the request body must be a JSON object (Expected `object`, got `null`)"),
        (b"", "the request body is empty: send a JSON object"),
        (b"{}", "the field 'text' is required"),
    ],
)
async def test_a_body_that_is_not_the_json_object_gets_400_saying_so(
    client: AsyncTestClient[Any], raw: bytes, detail: str
) -> None:
    response = await client.post(
        "/generate", content=raw, headers={"Content-Type": "application/json", "X-Request-Id": "bad-body"}
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["status_code"], body["request_id"]) == (400, "bad-body")
    assert body["detail"].startswith(detail), body["detail"]  # msgspec's words follow, with a byte offset


async def test_the_routers_own_404_and_405_carry_the_request_id(client: AsyncTestClient[Any]) -> None:
    for method, path, status in (("GET", "/no-such-route", 404), ("DELETE", "/generate", 405)):
        response = await client.request(method, path, headers={"X-Request-Id": f"id-{status}"})
        assert response.status_code == status
        assert response.headers["x-request-id"] == f"id-{status}"
        assert response.json()["request_id"] == f"id-{status}"
    assert "POST" in response.headers["allow"]  # Litestar's own headers are kept


async def test_a_compressed_body_gets_415_naming_the_encoding(client: AsyncTestClient[Any]) -> None:
    body = gzip.compress(b'{"text": "hello"}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post("/generate", content=body, headers=headers)
    assert response.status_code == 415  # was 400 "not valid JSON", which sent people looking for a JSON bug
    assert response.json()["detail"] == "Content-Encoding 'gzip' is not supported: send the request body uncompressed"
    assert response.headers["accept-encoding"] == "identity"
    openai_style = await client.post("/v1/audio/speech", content=body, headers=headers)
    assert openai_style.status_code == 415
    assert openai_style.json()["error"]["message"].startswith("Content-Encoding 'gzip' is not supported")
    identity = {**headers, "Content-Encoding": "identity"}
    assert (await client.post("/generate", json={"text": "hello"}, headers=identity)).status_code == 200


async def test_a_body_over_1_mib_gets_413(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/generate", content=b'{"text": "' + b"a" * (1024 * 1024) + b'"}')
    assert response.status_code == 413


async def test_the_worker_survives_bad_input(client: AsyncTestClient[Any]) -> None:
    for body in ({"text": ""}, {"text": "🙂"}, {"text": 1}):
        await client.post("/generate", json=body)
    response = await client.post("/generate", json={"text": "still alive"})
    assert response.status_code == 200
    assert (await client.get("/ping")).status_code == 200


# ---------------------------------------------------------------------------------------------- auth


async def test_ping_never_needs_a_key(keyed_client: AsyncTestClient[Any]) -> None:
    assert (await keyed_client.get("/ping")).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": f"Bearer {KEY}"}])
async def test_generate_refuses_without_a_valid_key(
    keyed_client: AsyncTestClient[Any], headers: dict[str, str]
) -> None:
    response = await keyed_client.post("/generate", json={"text": "hi"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["status_code"] == 401
    assert KEY not in response.text
    assert "wrong" not in response.text


@pytest.mark.parametrize("key", [KEY, "rotated-key"])
async def test_every_configured_key_is_accepted(keyed_client: AsyncTestClient[Any], key: str) -> None:
    response = await keyed_client.post("/generate", json={"text": "hi"}, headers={"X-API-Key": key})
    assert response.status_code == 200


async def test_the_key_is_checked_before_the_body(keyed_client: AsyncTestClient[Any]) -> None:
    response = await keyed_client.post("/generate", content=b"not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    compressed = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    body = gzip.compress(b'{"text": "hello"}')
    assert (await keyed_client.post("/generate", content=body, headers=compressed)).status_code == 401
    keyed = {**compressed, "X-API-Key": KEY}
    assert (await keyed_client.post("/generate", content=body, headers=keyed)).status_code == 415


async def test_the_schema_follows_the_same_key_rule(keyed_client: AsyncTestClient[Any]) -> None:
    assert (await keyed_client.get("/schema/openapi.json")).status_code == 401
    allowed = await keyed_client.get("/schema/openapi.json", headers={"X-API-Key": KEY})
    assert allowed.status_code == 200
    assert "/generate" in allowed.json()["paths"]


@pytest.mark.parametrize(("docs", "without_key", "with_key"), [("public", 200, 200), ("off", 404, 404)])
async def test_docs_can_be_public_or_off(tiny_backend: Any, docs: str, without_key: int, with_key: int) -> None:
    app = create_app(Settings(api_keys=(KEY,), docs=docs), backend=tiny_backend)  # type: ignore[arg-type]
    async with AsyncTestClient(app) as client:
        await wait_ready(client)
        assert (await client.get("/schema/openapi.json")).status_code == without_key
        assert (await client.get("/schema/openapi.json", headers={"X-API-Key": KEY})).status_code == with_key
        assert (await client.post("/generate", json={"text": "hi"})).status_code == 401  # the API still needs it


async def test_cors_is_off_unless_origins_are_configured(tiny_backend: Any) -> None:
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with AsyncTestClient(create_app(Settings(), backend=tiny_backend)) as client:
        await wait_ready(client)
        response = await client.post("/generate", json={"text": "hi"}, headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in response.headers
    app = create_app(Settings(cors_origins=("https://app.example",)), backend=tiny_backend)
    async with AsyncTestClient(app) as client:
        await wait_ready(client)
        preflight = await client.options("/generate", headers=origin)
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options("/generate", headers={**origin, "Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_markdown_is_read_as_its_words_unless_plain_is_asked_for(client: AsyncTestClient[Any]) -> None:
    async def audio(body: dict[str, Any], route: str = "/generate") -> bytes:
        response = await client.post(route, json={"seed": 3, "temperature": 0, **body})
        assert response.status_code == 200, response.text
        return response.content

    words = await audio({"text": "Hello there.\nGood morning"})
    marked = "# Hello there\n[Good](https://example.com/x) **morning**"
    assert await audio({"text": marked}) == words  # the default: the same audio as its words
    assert await audio({"text": marked, "stream": True}) == await audio(
        {"text": "Hello there.\nGood morning", "stream": True}
    )
    literal = await audio({"text": marked, "text_format": "plain"})
    assert len(literal) > len(words)  # the address is spelled out as written
    openai = {"model": "tts-1", "response_format": "wav"}
    assert await audio({**openai, "input": marked}, "/v1/audio/speech") == await audio(
        {**openai, "input": "Hello there.\nGood morning"}, "/v1/audio/speech"
    )
    only_markup = await client.post("/generate", json={"text": "---\n\n***"})
    assert only_markup.status_code == 422
    assert 'send text_format "plain"' in only_markup.json()["detail"]
    refused = await client.post("/generate", json={"text": "hi", "text_format": "html"})
    assert refused.status_code == 400
    assert "text_format" in refused.json()["detail"]


async def test_ssml_is_read_when_asked_for_or_when_the_root_is_speak(client: AsyncTestClient[Any]) -> None:
    async def wav(body: dict[str, Any]) -> tuple[int, int, dict[str, str]]:
        response = await client.post("/generate", json={"seed": 3, "temperature": 0, **body})
        assert response.status_code == 200, response.text
        return (*parse_wav(response.content), dict(response.headers))

    rate, words, _ = await wav({"text": "Hello there. Good morning."})
    document = '<speak>Hello there. <break time="2s"/><emphasis>Good</emphasis> morning.</speak>'
    for body in ({"text": document}, {"text": document, "text_format": "ssml"}):
        _, frames, headers = await wav(body)
        assert frames == words + 2 * rate  # the same words, two seconds of silence between them
        assert headers["x-ssml-ignored"] == "emphasis"  # read for its text only, and said so
    _, literal, headers = await wav({"text": document, "text_format": "plain"})
    assert words < literal < words + 2 * rate  # the tag names are read out, and there is no pause
    assert "x-ssml-ignored" not in headers
    streamed = await client.post("/generate", json={"text": document, "stream": True, "seed": 3, "temperature": 0})
    assert streamed.headers["x-ssml-ignored"] == "emphasis"
    for text, needle in (
        ("<speak>Hi <b>there</speak>", "text: the SSML is not well-formed: mismatched tag: line 1, column 20"),
        ('<speak>Hi <break time="soon"/></speak>', '<break time="soon">: give seconds or milliseconds'),
        ("<speak><break/></speak>", "its SSML has nothing to say"),
    ):
        refused = await client.post("/generate", json={"text": text})
        assert refused.status_code == 422
        assert needle in refused.json()["detail"]
    not_ssml = await client.post("/generate", json={"text": "Just words", "text_format": "ssml"})
    assert not_ssml.status_code == 422
    assert "not well-formed" in not_ssml.json()["detail"]
    openai_style = await client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "<speak>Hi <break time='x'/></speak>"}
    )
    assert openai_style.status_code == 422
    assert openai_style.json()["error"]["param"] == "input"


async def test_a_lexicon_changes_how_words_are_said_everywhere(tiny_backend: Any, tmp_path: Path) -> None:
    lexicon = tmp_path / "words.json"
    lexicon.write_text(json.dumps({"zqx": "hello there", "Straße": "strasse"}), encoding="utf-8")
    app = create_app(Settings(lexicon=str(lexicon)), backend=tiny_backend)
    async with AsyncTestClient(app) as client:
        await wait_ready(client)

        async def audio(body: dict[str, Any]) -> Any:
            response = await client.post("/generate", json={"seed": 3, "temperature": 0, **body})
            assert response.status_code == 200, response.text
            return response

        said = (await audio({"text": "Say hello there now."})).content
        assert (await audio({"text": "Say zqx now."})).content == said
        assert (await audio({"text": "Say ZQX now.", "stream": True})).content == (
            await audio({"text": "Say hello there now.", "stream": True})
        ).content
        ssml = await audio({"text": '<speak>Say zqx now.<break time="1s"/></speak>'})
        assert len(ssml.content) == len(said) + 2 * 16000  # one second of 16-bit samples more
        # The model has no "ß": the lexicon's respelling is what is checked, so nothing is reported unsaid.
        assert "x-unsaid-characters" not in (await audio({"text": "Die Straße."})).headers
        assert "x-unsaid-characters" not in (await audio({"text": "Die Straße.", "stream": True})).headers


async def test_characters_the_model_cannot_say_are_reported(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/generate", json={"text": "Pay $5 to Straße 中 now, 42 times!"})
    assert response.status_code == 200
    assert response.headers["x-unsaid-characters"] == "\\u00df\\u4e2d"  # JSON-escaped: ß and 中
    plain = await client.post("/generate", json={"text": "Nothing odd here, at 42."})
    assert "x-unsaid-characters" not in plain.headers
    streamed = await client.post("/generate", json={"text": "A 中 streams.", "stream": True})
    assert streamed.headers["x-unsaid-characters"] == "\\u4e2d"
    # Emoji are skipped on purpose when the text is read as Markdown (the default), reported when plain.
    skipped = await client.post("/generate", json={"text": "A snowman ☃ here."})
    assert "x-unsaid-characters" not in skipped.headers
    literal = await client.post("/generate", json={"text": "A snowman ☃ here.", "text_format": "plain"})
    assert literal.headers["x-unsaid-characters"] == "\\u2603"


@pytest.mark.parametrize(("fmt", "media_type"), [("mulaw", "audio/basic"), ("alaw", "audio/x-alaw-basic")])
async def test_telephony_formats_are_8_khz_g711(client: AsyncTestClient[Any], fmt: str, media_type: str) -> None:
    from inference.audio.g711 import pcm16_to_alaw, pcm16_to_mulaw

    body = {"text": "Your call is important to us.", "seed": 3}
    response = await client.post("/generate", json={**body, "response_format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["x-sample-rate"] == "8000"
    pcm = await client.post("/generate", json={**body, "response_format": "pcm", "sample_rate": 8000})
    assert response.content == (pcm16_to_mulaw if fmt == "mulaw" else pcm16_to_alaw)(pcm.content)
