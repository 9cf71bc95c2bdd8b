"""ElevenLabs' text-in WebSockets (``/v1/text-to-speech/{voice_id}/stream-input`` and ``multi-stream-input``)
in process, on the tiny real VITS model: the messages ElevenLabs clients such as Pipecat send and read."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing.websocket_test_session import WebSocketTestSession

from service.elevenlabs import alignment, output_format
from service.settings import Settings
from tests.integration.test_live import GatedBackend
from tests.integration.test_live import _client as live_client

SINGLE = "/v1/text-to-speech/some-elevenlabs-voice/stream-input"
MULTI = "/v1/text-to-speech/some-elevenlabs-voice/multi-stream-input"
KEY = "sk-test-elevenlabs"


@dataclass
class Heard:
    """What the socket sent: its messages in order, and how it closed."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def audio(self, context: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if "audio" in m and m.get("contextId") == context]

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("isFinal") is True]


def hear(ws: WebSocketTestSession) -> Heard:
    heard = Heard()
    while True:
        try:
            message = ws.receive()
        except WebSocketDisconnect as exc:
            heard.close_code = exc.code
            return heard
        if message["type"] == "websocket.close":
            heard.close_code = message.get("code", 1000)
            return heard
        heard.messages.append(json.loads(message["text"]))


def send(ws: WebSocketTestSession, **message: Any) -> None:
    ws.send_text(json.dumps(message))


def spoken_text(messages: list[dict[str, Any]]) -> str:
    return "".join("".join(m["alignment"]["chars"]) for m in messages if m["alignment"])


def test_a_stream_says_its_text_with_character_alignment_then_is_final(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings()):
        with client.websocket_connect(f"{SINGLE}?model_id=eleven_flash_v2_5&output_format=pcm_24000&seed=3") as ws:
            send(ws, text=" ", voice_settings={"stability": 0.5, "similarity_boost": 0.8})
            for piece in ("Hello ", "there. How are ", "you today? "):
                send(ws, text=piece, try_trigger_generation=True)
            send(ws, text="")
            heard = hear(ws)
        assert heard.close_code == 1000
        assert heard.messages[-1] == {"isFinal": True}
        audio = heard.audio()
        assert spoken_text(audio) == "Hello there. How are you today? "
        for message in audio:
            seconds = len(base64.b64decode(message["audio"])) / 2 / 24000
            aligned = message["alignment"]
            if aligned is None:
                continue  # the resampler's tail at the end
            assert aligned == message["normalizedAlignment"]
            assert len(aligned["chars"]) == len(aligned["charStartTimesMs"]) == len(aligned["charDurationsMs"])
            starts = aligned["charStartTimesMs"]
            assert starts == sorted(starts)
            assert all(d >= 0 for d in aligned["charDurationsMs"])
            # The last character lasts to the message's end: clients add it up to place the next message.
            end_ms = starts[-1] + aligned["charDurationsMs"][-1]
            assert abs(end_ms - seconds * 1000) <= 30  # (the resampler holds a few ms back per message)
        assert "contextId" not in audio[0]


def test_a_multi_socket_keeps_contexts_apart_and_closes_each(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings()):
        with client.websocket_connect(f"{MULTI}?output_format=pcm_16000") as ws:
            send(ws, text=" ", context_id="turn-1", voice_settings={"speed": 1.0})
            send(ws, text="The first turn is here. And it ", context_id="turn-1")
            send(ws, text="goes on.", context_id="turn-1", flush=True)
            send(ws, context_id="turn-1", close_context=True)  # flushed: all of it is still said
            send(ws, text="")  # a keep-alive, not an end
            send(ws, text=" ", context_id="turn-2")
            send(ws, text="The second turn. ", context_id="turn-2")
            send(ws, context_id="turn-2", flush=True)
            send(ws, close_socket=True)
            heard = hear(ws)
        assert heard.close_code == 1000
        assert spoken_text(heard.audio("turn-1")) == "The first turn is here. And it goes on. "
        assert spoken_text(heard.audio("turn-2")) == "The second turn. "
        assert sorted(m["contextId"] for m in heard.finals()) == ["turn-1", "turn-2"]
        for final in heard.finals():  # each context's isFinal comes after its last audio
            last = max(i for i, m in enumerate(heard.messages) if m.get("contextId") == final["contextId"])
            assert heard.messages[last] is final


def test_closing_a_context_that_was_not_flushed_drops_what_is_not_yet_said(tiny_backend: Any) -> None:
    """Pipecat closes the context when the caller interrupts: its unsent speech is for nobody."""
    gated = GatedBackend(tiny_backend)
    for client in live_client(gated, Settings(max_batch_size=2)):
        before = client.get("/stats").json()["jobs_run"]
        gated.gate.clear()  # batches wait: nothing can be said before the close arrives
        with client.websocket_connect(f"{MULTI}?output_format=pcm_16000") as ws:
            send(ws, text=" ", context_id="c")
            send(ws, text="One sentence here. " * 30 + "And the unfinished", context_id="c")
            send(ws, context_id="c", close_context=True)
            final = json.loads(ws.receive_text())  # at once, while the model still waits
            gated.gate.set()
            send(ws, close_socket=True)
            rest = hear(ws)
        assert final == {"isFinal": True, "contextId": "c"}
        assert rest.messages == []  # nothing of the closed context came after its isFinal
        assert rest.close_code == 1000
        # At most the batch already in the model when the close came: the queued sentences were dropped.
        assert client.get("/stats").json()["jobs_run"] - before <= 2


def test_voice_settings_speed_changes_the_pace(tiny_backend: Any) -> None:
    lengths = []
    for client in live_client(tiny_backend, Settings()):
        for speed in (1.0, 2.0):
            with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000&seed=5") as ws:
                send(ws, text=" ", voice_settings={"speed": speed})
                send(ws, text="A sentence long enough to hear its pace. ")
                send(ws, text="")
                heard = hear(ws)
            lengths.append(sum(len(base64.b64decode(m["audio"])) for m in heard.audio()))
    assert lengths[1] < 0.7 * lengths[0]


def test_the_key_may_come_in_the_header_the_query_or_the_first_message(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings(api_keys=(KEY,))):
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000", headers={"xi-api-key": KEY}) as ws:
            send(ws, text=" ")
            send(ws, text="Hello. ")
            send(ws, text="")
            assert hear(ws).finals() == [{"isFinal": True}]
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000&authorization=Bearer%20{KEY}") as ws:
            send(ws, text=" ")
            send(ws, text="Hello. ")
            send(ws, text="")
            assert hear(ws).finals() == [{"isFinal": True}]
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000") as ws:
            send(ws, text=" ", xi_api_key=KEY)
            send(ws, text="Hello. ")
            send(ws, text="")
            assert hear(ws).finals() == [{"isFinal": True}]
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000") as ws:
            send(ws, text=" ")
            refused = hear(ws)
        assert refused.close_code == 1008
        assert refused.messages == [
            {"error": "invalid_api_key", "code": 401,
             "message": "an API key is required: send it in the xi-api-key header or first message"}
        ]  # fmt: skip
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000", headers={"xi-api-key": "wrong"}) as ws:
            wrong = hear(ws)  # refused before any message
        assert wrong.messages[0]["code"] == 401
        assert KEY not in json.dumps(wrong.messages)
        assert "wrong" not in json.dumps(wrong.messages)


def test_a_bad_output_format_or_message_is_refused_naming_it(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings()):
        with client.websocket_connect(f"{SINGLE}?output_format=wav_96000") as ws:
            heard = hear(ws)
        assert heard.close_code == 1008
        assert "output_format 'wav_96000' is not supported" in heard.messages[0]["message"]
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000") as ws:
            ws.send_text("not json")
            heard = hear(ws)
        assert heard.messages[0]["code"] == 400
        assert heard.close_code == 1008


def test_an_idle_stream_is_closed_after_its_inactivity_timeout(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings()):
        with client.websocket_connect(f"{SINGLE}?output_format=pcm_16000&inactivity_timeout=1") as ws:
            send(ws, text=" ")
            send(ws, text="Said, then nothing more. ", flush=True)
            heard = hear(ws)
        assert spoken_text(heard.audio()) == "Said, then nothing more. "
        assert heard.messages[-1]["error"] == "inactivity_timeout"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("pcm_24000", ("pcm", 24000)), ("mp3_44100_128", ("mp3", 44100)), ("ulaw_8000", ("mulaw", None)),
     ("alaw_8000", ("alaw", None)), ("opus_48000_64", ("opus", 48000)), ("pcm_22050", ("pcm", 22050))],
)  # fmt: skip
def test_output_formats_map_onto_chorus_formats(value: str, expected: tuple[str, int | None]) -> None:
    assert output_format(value) == expected
    for bad in ("pcm_96000", "flac_44100", "pcm", "mp3_44100_128_x"):
        with pytest.raises(ValueError, match="is not supported"):
            output_format(bad)


def test_alignment_spreads_each_words_characters_over_its_time() -> None:
    from inference.speech import WordTime

    aligned = alignment((WordTime("Hi,", 0.1, 0.4), WordTime("you", 0.5, 0.8)), 1.0)
    assert aligned is not None
    assert aligned["chars"] == ["H", "i", ",", " ", "y", "o", "u", " "]
    assert aligned["charStartTimesMs"] == [100, 200, 300, 400, 500, 600, 700, 800]
    assert aligned["charDurationsMs"] == [100, 100, 100, 100, 100, 100, 100, 200]
    assert alignment((), 1.0) is None


def test_sessions_are_counted_under_their_route_template() -> None:
    from service.observability import route_label

    assert route_label(f"{MULTI}", ()) == "/v1/text-to-speech/{voice_id}/multi-stream-input"
    assert route_label(f"{SINGLE}", ()) == "/v1/text-to-speech/{voice_id}/stream-input"
    assert route_label("/v1/text-to-speech/v1a2b3", ()) == "/v1/text-to-speech/{voice_id}"
    assert route_label("/v1/text-to-speech/v/stream/with-timestamps", ()) == (
        "/v1/text-to-speech/{voice_id}/stream/with-timestamps"
    )
    assert route_label("/v1/text-to-speech/any/convert", ()) == "other"  # no label per voice id


# ---------------------------------------------------------------------------------------------- HTTP

BODY = {"text": "Hello there. How are you today?", "model_id": "eleven_multilingual_v2", "seed": 9}


def test_http_convert_and_stream_answer_the_audio_generate_would(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings(api_keys=(KEY,))):
        headers = {"xi-api-key": KEY}
        whole = client.post("/v1/text-to-speech/any-voice?output_format=pcm_16000", json=BODY, headers=headers)
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/pcm"
        generated = client.post(
            "/generate",
            json={"text": BODY["text"], "seed": 9, "response_format": "pcm"},
            headers={"X-API-Key": KEY},
        )
        assert whole.content == generated.content  # the same engine, parameters and seed
        streamed = client.post(
            "/v1/text-to-speech/any-voice/stream?output_format=pcm_16000", json=BODY, headers=headers
        )
        assert streamed.content == whole.content
        mp3 = client.post("/v1/text-to-speech/any-voice", json=BODY, headers=headers)  # ElevenLabs' default
        assert mp3.headers["content-type"] == "audio/mpeg"
        faster = client.post(
            "/v1/text-to-speech/any-voice?output_format=pcm_16000",
            json={**BODY, "voice_settings": {"stability": 0.3, "speed": 2.0}},
            headers=headers,
        )
        assert len(faster.content) < 0.7 * len(whole.content)


def test_http_with_timestamps_aligns_every_character(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings()):
        whole = client.post("/v1/text-to-speech/v?output_format=pcm_16000", json=BODY).content
        timed = client.post("/v1/text-to-speech/v/with-timestamps?output_format=pcm_16000", json=BODY).json()
        assert base64.b64decode(timed["audio_base64"]) == whole
        aligned = timed["alignment"]
        assert aligned == timed["normalized_alignment"]
        assert "".join(aligned["characters"]) == BODY["text"] + " "
        starts, ends = aligned["character_start_times_seconds"], aligned["character_end_times_seconds"]
        assert starts == sorted(starts)
        assert all(s <= e for s, e in zip(starts, ends, strict=True))
        assert ends[-1] == pytest.approx(len(whole) / 2 / 16000, abs=0.002)
        lines = client.post("/v1/text-to-speech/v/stream/with-timestamps?output_format=pcm_16000", json=BODY)
        assert lines.headers["content-type"] == "application/x-ndjson"
        items = [json.loads(line) for line in lines.text.splitlines()]
        assert b"".join(base64.b64decode(item["audio_base64"]) for item in items) == whole
        assert "".join("".join(i["alignment"]["characters"]) for i in items if i["alignment"]) == BODY["text"] + " "
        # Times run on across the lines: the second sentence's start where the first one's audio ended.
        first_s = len(base64.b64decode(items[0]["audio_base64"])) / 2 / 16000
        assert items[1]["alignment"]["character_start_times_seconds"][0] >= first_s - 0.002


def test_http_refusals_name_the_problem(tiny_backend: Any) -> None:
    for client in live_client(tiny_backend, Settings(api_keys=(KEY,))):
        missing = client.post("/v1/text-to-speech/v", json=BODY)
        assert missing.status_code == 401
        assert "xi-api-key" in missing.json()["error"]["message"]
        headers = {"xi-api-key": KEY}
        bad = client.post("/v1/text-to-speech/v?output_format=wav_44100", json=BODY, headers=headers)
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == "output_format"
        empty = client.post("/v1/text-to-speech/v", json={"text": "  "}, headers=headers)
        assert empty.status_code == 422
        assert empty.json()["error"]["param"] == "text"
        assert client.post("/v1/text-to-speech/v", json={"txt": "x"}, headers=headers).status_code == 400


def test_a_socket_without_a_context_goes_idle_and_contexts_are_capped(tiny_backend: Any) -> None:
    from service.elevenlabs import MAX_CONTEXTS

    for client in live_client(tiny_backend, Settings()):
        with client.websocket_connect(f"{MULTI}?output_format=pcm_16000&inactivity_timeout=1") as ws:
            heard = hear(ws)  # connected, and then nothing
        assert heard.messages[-1]["error"] == "inactivity_timeout"
        assert heard.close_code == 1008
        with client.websocket_connect(f"{MULTI}?output_format=pcm_16000") as ws:
            for i in range(MAX_CONTEXTS + 1):
                send(ws, text=" ", context_id=f"c{i}")
            refused = json.loads(ws.receive_text())
            assert refused["code"] == 429
            assert refused["contextId"] == f"c{MAX_CONTEXTS}"
            send(ws, close_socket=True)
            rest = hear(ws)
        assert sorted(m["contextId"] for m in rest.finals()) == sorted(f"c{i}" for i in range(MAX_CONTEXTS))
        assert rest.close_code == 1000


def test_auto_mode_says_each_phrase_at_once(tiny_backend: Any) -> None:
    """Pipecat sends whole sentences with auto_mode=true: none waits for a word after it to show its end."""
    for client in live_client(tiny_backend, Settings()):
        firsts = []
        for auto in ("true", "false"):
            with client.websocket_connect(
                f"{SINGLE}?output_format=pcm_16000&inactivity_timeout=1&auto_mode={auto}"
            ) as ws:
                send(ws, text=" ")
                send(ws, text="An unfinished phrase")  # no end, no flush: only auto_mode says it now
                firsts.append(json.loads(ws.receive_text()))
                hear(ws)
        assert spoken_text([firsts[0]]) == "An unfinished phrase "
        assert firsts[1]["error"] == "inactivity_timeout"  # without it, the phrase waited for more
