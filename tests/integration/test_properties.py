"""Property-based tests: whatever text arrives, the splitter, the encoders and the HTTP API hold up."""

from __future__ import annotations

import io
import json
import struct
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from inference.audio.formats import FORMATS, StreamEncoder
from inference.audio.wav import float_to_pcm16, wav_bytes
from inference.text import split_sentences
from service.app import create_app
from service.settings import Settings

# Control characters, NUL, right-to-left text, emoji, zero-width joiners, combining marks, CJK.
_NASTY_PARTS = ["\x00", "\x07", "\u200b", "\u200d", "\u202e", "\ufeff", "\u0301", "🙂", "👩‍👩‍👧", "שלום", "مرحبا"]
NASTY = st.sampled_from([*_NASTY_PARTS, "漢字", "\n", "\t", " ", ".", "...", "Dr.", "3.14", '"'])
TEXT = st.lists(st.one_of(st.text(max_size=40), NASTY), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=TEXT, limit=st.integers(min_value=1, max_value=500))
def test_the_splitter_takes_any_text(text: str, limit: int) -> None:
    chunks = split_sentences(text, "en", limit)
    assert all(0 < len(c) <= limit and c.strip() == c for c in chunks)


def test_the_splitter_takes_100000_characters_without_a_space() -> None:
    chunks = split_sentences("a" * 100_000, "en", 400)
    assert sum(len(c) for c in chunks) == 100_000


FLOATS = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=2000).map(
    lambda xs: np.asarray(xs, dtype=np.float32)
)


@settings(max_examples=200, deadline=None)
@given(audio=FLOATS, rate=st.integers(min_value=1, max_value=96000))
def test_wav_encoding_takes_any_samples(audio: np.ndarray, rate: int) -> None:
    data = wav_bytes(audio, rate)
    with wave.open(io.BytesIO(data)) as parsed:
        assert parsed.getnframes() == len(audio)
        assert parsed.getframerate() == rate
    assert len(float_to_pcm16(audio)) == 2 * len(audio)


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(FLOATS, max_size=5), fmt=st.sampled_from(sorted(FORMATS)))
def test_stream_encoders_take_any_chunks(chunks: list[np.ndarray], fmt: str) -> None:
    encoder = StreamEncoder(fmt, 22050)
    data = b"".join([encoder.encode(c) for c in chunks] + [encoder.finish()])
    if fmt == "wav":
        assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
        assert len(data) == 44 + 2 * sum(len(c) for c in chunks)


@pytest.fixture(scope="module")
def client(tiny_backend: Any) -> Iterator[TestClient[Any]]:
    app = create_app(Settings(max_text_chars=2000, log_level="WARNING"), backend=tiny_backend)
    with TestClient(app) as test_client:
        for _ in range(500):
            if test_client.get("/ping").status_code == 200:
                break
        yield test_client


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT, stream=st.booleans())
def test_any_text_gets_audio_or_a_clear_4xx(client: TestClient[Any], text: str, stream: bool) -> None:
    response = client.post("/generate", json={"text": text, "stream": stream})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["detail"]
    else:
        assert response.content[:4] == b"RIFF"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "a\\ud800b"}',  # a lone surrogate escaped in JSON
        b'{"text": "\\u0000\\u0000"}',
        '{"text": "\u202eevil\u202c"}'.encode(),
        b'{"text": "' + b"x" * 100_000 + b'", "stream": true}',
        b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_hostile_bodies_get_a_clear_4xx_or_audio(client: TestClient[Any], raw: bytes) -> None:
    response = client.post("/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert json.loads(response.text)["detail"]


# Any JSON an ElevenLabs client might send (right or wrong types, unknown fields, nasty text).
ELEVENLABS_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(TEXT, st.just(""), st.just(" "), st.integers(), st.none()),
        "context_id": st.one_of(st.sampled_from(["a", "b", ""]), st.integers()),
        "flush": st.one_of(st.booleans(), st.text(max_size=3)),
        "close_context": st.booleans(),
        "voice_settings": st.one_of(
            st.fixed_dictionaries({}, optional={"speed": st.floats(allow_nan=True), "stability": st.floats()}),
            st.text(max_size=5),
        ),
        "unknown": st.text(max_size=5),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=st.lists(ELEVENLABS_MESSAGE, max_size=6), multi=st.booleans())
def test_elevenlabs_sockets_take_any_messages(client: TestClient[Any], messages: list[Any], multi: bool) -> None:
    """Whatever arrives, the socket says it or refuses it with a named error: never an internal error."""
    from litestar.exceptions import WebSocketDisconnect

    path = "multi-stream-input" if multi else "stream-input"
    with client.websocket_connect(f"/v1/text-to-speech/v/{path}?output_format=pcm_16000&inactivity_timeout=2") as ws:
        for message in messages:
            ws.send_text(json.dumps(message))
        ws.send_text(json.dumps({"close_socket": True} if multi else {"text": ""}))
        close_code = None
        while close_code is None:
            try:
                received = ws.receive()
            except WebSocketDisconnect as exc:
                close_code = exc.code
                continue
            if received["type"] == "websocket.close":
                close_code = received.get("code", 1000)
                continue
            event = json.loads(received["text"])
            assert event.get("code") != 500, event
    assert close_code in (1000, 1008), close_code
