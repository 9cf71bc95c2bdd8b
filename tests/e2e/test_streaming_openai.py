"""Streaming, output formats and the OpenAI-compatible API against the real server (tiny model)."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from inference.audio.formats import FORMATS
from tests.e2e.server import Server, running_server
from tests.helpers import decoded_seconds

pytestmark = pytest.mark.slow

KEY = "stream-test-key"
TEXT = "The first sentence is short. The second one is a little longer than that. And a third to finish."
PADDING_S = 0.2  # codec priming and padding (AAC, MP3)


@pytest.fixture(scope="module")
def server(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CHORUS_MODEL": str(tiny_vits_dir), "API_KEY": KEY}
    with running_server(tmp_path_factory.mktemp("stream"), env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def generate(server: Server, **body: object) -> httpx.Response:
    return httpx.post(server.url + "/generate", json=body, headers={"X-API-Key": KEY}, timeout=120)


def wav_samples(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


# ---------------------------------------------------------------------------------------------- /generate


def test_a_streamed_wav_has_unknown_sizes_and_the_same_samples(server: Server) -> None:
    whole = generate(server, text=TEXT, seed=5)
    with httpx.stream(
        "POST", server.url + "/generate", json={"text": TEXT, "seed": 5, "stream": True}, headers={"X-API-Key": KEY}
    ) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        streamed = b"".join(response.iter_bytes())
    assert struct.unpack("<I", streamed[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", streamed[40:44])[0] == 0xFFFFFFFF
    assert whole.headers["content-length"] == str(len(whole.content))
    streamed_pcm, whole_pcm = np.frombuffer(streamed[44:], dtype="<i2"), wav_samples(whole.content)
    assert len(streamed_pcm) == len(whole_pcm)
    # Same samples up to batch-dependent float rounding (1e-3 of full scale, the exactness bound).
    assert int(np.abs(streamed_pcm.astype(np.int32) - whole_pcm).max()) <= 33


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("stream", [False, True])
def test_every_format_decodes_to_the_wav_duration(server: Server, fmt: str, stream: bool) -> None:
    reference = float(generate(server, text=TEXT, seed=9).headers["x-audio-duration-s"])
    response = generate(server, text=TEXT, seed=9, response_format=fmt, stream=stream)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FORMATS[fmt].media_type)
    rate = int(response.headers["x-sample-rate"])
    assert reference - 0.002 <= decoded_seconds(response.content, fmt, rate) <= reference + PADDING_S


def test_an_unsupported_format_is_a_422_listing_the_supported(server: Server) -> None:
    response = generate(server, text=TEXT, response_format="ogg-vorbis")
    assert response.status_code == 422
    assert "wav, pcm, flac, mp3, opus, aac" in response.json()["detail"]


def test_sample_rate_resamples(server: Server) -> None:
    reference = float(generate(server, text=TEXT, seed=3).headers["x-audio-duration-s"])
    response = generate(server, text=TEXT, seed=3, sample_rate=8000)
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getframerate() == 8000
        assert abs(wav.getnframes() / 8000 - reference) < 0.01
    assert generate(server, text=TEXT, sample_rate=4000).status_code == 400


def test_streamed_requests_have_their_own_larger_text_limit(server: Server) -> None:
    long_text = "Words keep coming in this long text. " * 150  # 5550 characters
    assert generate(server, text=long_text).status_code == 422
    response = generate(server, text=long_text, stream=True, response_format="pcm")
    assert response.status_code == 200
    assert len(response.content) > 0


# ---------------------------------------------------------------------------------------------- OpenAI API


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_openai_client_gets_every_format(server: Server, client: openai.OpenAI, fmt: str) -> None:
    reference = float(generate(server, text=TEXT, seed=11, temperature=0).headers["x-audio-duration-s"])
    speech = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format=fmt,  # type: ignore[arg-type]
        extra_body={"seed": 11, "temperature": 0},
    )
    rate = 24000 if fmt == "pcm" else int(speech.response.headers["x-sample-rate"])
    assert reference - 0.01 <= decoded_seconds(speech.content, fmt, rate) <= reference + PADDING_S


def test_the_openai_client_streams(server: Server, client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="mp3", instructions="Speak cheerfully."
    ) as response:
        pieces = list(response.iter_bytes())
    assert len(pieces) >= 1
    assert decoded_seconds(b"".join(pieces), "mp3", 16000) > 0.1


def test_sse_sends_base64_deltas_then_done(server: Server) -> None:
    response = httpx.post(
        server.url + "/v1/audio/speech",
        json={"model": "tts-1", "input": TEXT, "response_format": "pcm", "stream_format": "sse", "seed": 2},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    pcm = np.frombuffer(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), dtype="<i2")
    direct = httpx.post(
        server.url + "/v1/audio/speech",
        json={"model": "tts-1", "input": TEXT, "response_format": "pcm", "seed": 2},
        headers={"X-API-Key": KEY},
        timeout=120,
    )
    direct_pcm = np.frombuffer(direct.content, dtype="<i2")
    assert len(pcm) == len(direct_pcm)
    assert int(np.abs(pcm.astype(np.int32) - direct_pcm).max()) <= 33


def test_unknown_model_and_voice_are_refused_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing_model:
        client.audio.speech.create(model="whisper-1", voice="alloy", input="hi")
    assert missing_model.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing_model.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as missing_voice:
        client.audio.speech.create(model="tts-1", voice="robot", input="hi")
    assert missing_voice.value.body["code"] == "voice_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
    assert too_long.value.body["param"] == "input"  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "message", "param"),
    [
        (b"", "the request body is empty: send a JSON object", None),
        (b'{"model": "tts-1", "input": ', "the request body is not valid JSON (Input data was truncated)", None),
        (b"[]", "the request body must be a JSON object (Expected `object`, got `array`)", None),
        (b'{"input": "hi"}', "the field 'model' is required", "model"),
        (b'{"model": "tts-1", "input": "hi", "speed": 9}', "Expected `float` <= 4.0 (field 'speed')", "speed"),
    ],
)
def test_a_malformed_v1_body_is_refused_in_openai_shape_naming_the_problem(
    server: Server, raw: bytes, message: str, param: str | None
) -> None:
    response = httpx.post(
        server.url + "/v1/audio/speech", content=raw, headers={"X-API-Key": KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


def test_v1_auth_takes_bearer_or_x_api_key(server: Server) -> None:
    body = {"model": "tts-1", "input": "hi there", "response_format": "wav"}
    url = server.url + "/v1/audio/speech"
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.post(url, json=body, headers={"X-API-Key": KEY}).status_code == 200
    # Behind RunPod the bearer token is RunPod's key: X-API-Key alone must still be enough.
    assert httpx.post(url, json=body, headers={"X-API-Key": KEY, "Authorization": "Bearer rp_x"}).status_code == 200
    refused = httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in refused.text


def test_models_and_voices_are_listed(client: openai.OpenAI, server: Server) -> None:
    ids = [model.id for model in client.models.list().data]
    assert ids[0] == Path(ids[0]).name  # the served model's own name first
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids)
    voices = httpx.get(server.url + "/v1/audio/voices", headers={"X-API-Key": KEY}).json()
    assert voices["data"][0]["default"] is True
    assert voices["aliases"]["alloy"] == voices["data"][0]["id"]


def test_a_model_is_retrieved_by_any_of_its_names(client: openai.OpenAI) -> None:
    for name in ("tts-1", "chorus", client.models.list().data[0].id):
        model = client.models.retrieve(name)
        assert (model.id, model.object, model.owned_by) == (name, "model", "chorus")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("whisper-1")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_unknown_v1_routes_and_methods_are_refused_in_openai_shape(server: Server) -> None:
    headers = {"X-API-Key": KEY}
    # Clients written for OpenAI probe routes Chorus does not serve: they must get errors they can parse.
    unknown = httpx.post(server.url + "/v1/audio/transcriptions", headers=headers)
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["message"].startswith("Invalid URL (POST /v1/audio/transcriptions)")
    assert "POST /v1/audio/speech" in error["message"]
    assert error["type"] == "invalid_request_error"
    wrong_method = httpx.get(server.url + "/v1/audio/speech", headers=headers)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["message"] == "GET is not allowed on /v1/audio/speech"
    assert "POST" in wrong_method.headers["allow"]
    # Outside /v1 the service keeps its own shape.
    assert httpx.get(server.url + "/no-such-route", headers=headers).json()["status_code"] == 404
