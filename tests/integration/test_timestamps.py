"""Word timestamps over every surface, in process on the tiny real VITS model (and a SpeechT5 model that
cannot time words): /generate, /v1/audio/speech as SSE, the live WebSocket and the queue worker."""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.engine import bring_up
from service.runpod_worker import make_handler
from service.settings import Settings
from service.state import Phase, ServiceState
from tests.helpers import ping_after_loading
from tests.integration.test_live import ROUTE, collect, send
from tests.integration.test_live import _client as live_client
from tests.tiny_model import write_tiny_speecht5

TEXT = "Good morning to you. The train leaves at 42 past nine, so hurry up."


@pytest.fixture
async def client(tiny_backend: Any) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(Settings(), backend=tiny_backend)) as test_client:
        assert (await ping_after_loading(test_client)).status_code == 200
        yield test_client


def check_words(words: list[dict[str, Any]], text: str, start_s: float, end_s: float) -> None:
    """The words are the text's, in order, without overlap, inside [start_s, end_s]."""
    assert [w["word"] for w in words] == text.split()
    at = start_s
    for word in words:
        assert at <= word["start_s"] <= word["end_s"] <= end_s + 0.001
        at = word["end_s"]
    assert sum(w["end_s"] > w["start_s"] for w in words) == len(words)  # every word here is said


def sse_events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_generate_answers_the_audio_and_its_words_as_json(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/generate", json={"text": TEXT, "seed": 4, "timestamps": "word"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert abs(seconds - body["duration_s"]) < 0.001
    assert body["seed"] == 4
    check_words(body["words"], TEXT, 0.0, seconds)
    # The same request without timestamps is the same audio, as a plain WAV.
    plain = await client.post("/generate", json={"text": TEXT, "seed": 4})
    assert plain.headers["content-type"] == "audio/wav"
    assert plain.content == base64.b64decode(body["audio"])


async def test_generate_refuses_timestamps_with_a_stream(client: AsyncTestClient[Any]) -> None:
    refused = await client.post("/generate", json={"text": TEXT, "stream": True, "timestamps": "word"})
    assert refused.status_code == 422
    assert "stream_format sse" in refused.json()["detail"]
    bad = await client.post("/generate", json={"text": TEXT, "timestamps": "character"})
    assert bad.status_code == 400
    assert "timestamps" in bad.json()["detail"]


async def test_openai_sse_sends_each_sentences_words_before_its_audio(client: AsyncTestClient[Any]) -> None:
    body = {"model": "chorus", "input": TEXT, "response_format": "pcm", "stream_format": "sse", "seed": 2,
            "timestamps": "word"}  # fmt: skip
    events = sse_events((await client.post("/v1/audio/speech", json=body)).text)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.words"  # the first sentence's words come before its audio
    assert kinds.count("speech.audio.words") == 2  # one event per sentence
    words = [w for e in events if e["type"] == "speech.audio.words" for w in e["words"]]
    seconds = events[-1]["chorus"]["audio_seconds"]
    check_words(words, TEXT, 0.0, seconds)
    # The second sentence's words start after the first sentence's audio (times are in the whole stream).
    second = next(e for e in events[1:] if e["type"] == "speech.audio.words")
    before = sum(len(base64.b64decode(e["audio"])) for e in events[: events.index(second)] if "audio" in e)
    assert second["words"][0]["start_s"] >= before / 2 / 24000 - 0.01
    plain = sse_events((await client.post("/v1/audio/speech", json={**body, "timestamps": "none"})).text)
    assert "speech.audio.words" not in [e["type"] for e in plain]


async def test_openai_timestamps_need_sse(client: AsyncTestClient[Any]) -> None:
    refused = await client.post("/v1/audio/speech", json={"model": "chorus", "input": TEXT, "timestamps": "word"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "timestamps"
    assert "sse" in error["message"]


def test_live_sentence_events_carry_their_words_in_the_sessions_time(tiny_backend: Any) -> None:
    for test_client in live_client(tiny_backend, Settings()):
        with test_client.websocket_connect(f"{ROUTE}?timestamps=word&chunking=sentence&seed=1") as ws:
            for piece in ("Good morning to", " you. The train leaves at 42", " past nine, so hurry up."):
                send(ws, type="speak", text=piece)
            send(ws, type="close")
            got = collect(ws)
        sentences = got.of("sentence")
        assert [s["text"] for s in sentences] == [
            "Good morning to you.",
            "The train leaves at 42 past nine, so hurry up.",
        ]
        for event in sentences:
            check_words(event["words"], event["text"], event["start_s"], event["start_s"] + event["duration_s"])
        assert sentences[1]["words"][0]["start_s"] >= sentences[0]["words"][-1]["end_s"]
        with test_client.websocket_connect(f"{ROUTE}?seed=1") as ws:
            send(ws, type="close", text="No words asked for.")
            assert "words" not in collect(ws).of("sentence")[0]


@pytest.fixture(scope="module")
def speecht5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_speecht5(tmp_path_factory.mktemp("speecht5"))


async def test_a_model_that_cannot_time_words_refuses_to_on_every_surface(
    tiny_vits_dir: Path, speecht5_dir: Path
) -> None:
    env = {"CHORUS_MODELS": f"en={tiny_vits_dir}, de={speecht5_dir}", "CHORUS_DEVICE": "cpu"}
    async with AsyncTestClient(create_app(Settings.from_env(env))) as client:
        assert (await ping_after_loading(client, timeout_s=120)).status_code == 200
        german = {"text": "Hallo.", "language": "de", "voice": "bob", "timestamps": "word"}
        refused = await client.post("/generate", json=german)
        assert refused.status_code == 422
        assert "cannot time words" in refused.json()["detail"]
        english = await client.post("/generate", json={**german, "language": "en", "voice": None})
        assert english.status_code == 200  # the VITS model serving English can
        speecht5 = (await client.get("/v1/models")).json()["data"][1]["id"]
        # The voice listing says which can (a Chorus extension; the playground lights captions with it).
        assert (await client.get("/v1/audio/voices")).json()["word_timestamps"] is True
        assert (await client.get("/v1/audio/voices", params={"model": speecht5})).json()["word_timestamps"] is False
        body = {"model": speecht5, "input": "Hallo.", "stream_format": "sse", "timestamps": "word"}
        openai = await client.post("/v1/audio/speech", json=body)
        assert openai.status_code == 422
        assert openai.json()["error"]["param"] == "timestamps"


async def test_a_queue_job_returns_words_beside_its_audio(tiny_backend: Any) -> None:
    state = ServiceState(settings=Settings())
    await bring_up(state, tiny_backend)
    assert state.phase is Phase.READY
    handler = make_handler(state)
    try:
        [item] = [i async for i in handler({"id": "t", "input": {"text": TEXT, "timestamps": "word"}})]
        check_words(item["words"], TEXT, 0.0, item["duration_s"])
        [refused] = [
            i async for i in handler({"id": "t", "input": {"text": TEXT, "timestamps": "word", "stream": True}})
        ]
        assert "not with" in refused["error"]
    finally:
        assert state.batcher is not None
        state.batcher.stop(drain=True, timeout_s=10)
