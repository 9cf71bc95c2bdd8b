"""``WebSocket /v1/audio/speech/stream-input`` in process, on the tiny real VITS model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from service.app import create_app
from service.live import Listener
from service.settings import Settings

ROUTE = "/v1/audio/speech/stream-input"
TEXT = "Hello there. How are you today? I am fine, thanks."


@dataclass
class Session:
    """What a session sent back: its JSON events, its audio bytes, and how it closed."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    #: Every message in order: ("event", dict) or ("audio", byte count).
    order: list[tuple[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def collect(ws: WebSocketTestSession, until: str | None = None) -> Session:
    """Read until the server closes (or until an event of type ``until``)."""
    got = Session()
    while True:
        try:
            message = ws.receive()
        except WebSocketDisconnect as exc:
            got.close_code = exc.code
            return got
        if message["type"] == "websocket.close":
            got.close_code = message.get("code", 1000)
            return got
        if message.get("bytes") is not None:
            got.audio += message["bytes"]
            got.order.append(("audio", len(message["bytes"])))
            continue
        event = json.loads(message["text"])
        got.events.append(event)
        got.order.append(("event", event))
        if event["type"] == until:
            return got


def send(ws: WebSocketTestSession, **message: Any) -> None:
    ws.send_text(json.dumps(message))


@pytest.fixture
def client(tiny_backend: Any) -> Iterator[TestClient[Any]]:
    yield from _client(tiny_backend, Settings())


def _client(backend: Any, settings: Settings) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings, backend=backend)) as test_client:
        deadline = time.monotonic() + 30
        while test_client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield test_client


def test_pieces_come_back_as_the_whole_texts_sentences_and_its_audio(client: TestClient[Any]) -> None:
    with client.websocket_connect(f"{ROUTE}?seed=7&chunking=sentence") as ws:
        for i in range(0, len(TEXT), 3):  # as a language model streams: a few characters at a time
            send(ws, type="speak", text=TEXT[i : i + 3])
        send(ws, type="close")
        got = collect(ws)
    assert got.close_code == 1000
    sentences = got.of("sentence")
    assert [s["text"] for s in sentences] == ["Hello there.", "How are you today?", "I am fine, thanks."]
    assert [s["index"] for s in sentences] == [0, 1, 2]
    # Each sentence's event comes before its audio, and the timeline adds up.
    assert [kind for kind, _ in got.order[:2]] == ["event", "audio"]
    assert sentences[1]["start_s"] == pytest.approx(sentences[0]["start_s"] + sentences[0]["duration_s"], abs=2e-3)
    done = got.of("done")[0]
    assert done["sentences"] == 3
    assert done["seed"] == 7
    assert done["sample_rate"] == 16000
    assert done["audio_seconds"] == pytest.approx(len(got.audio) / 2 / 16000, abs=1e-3)

    # The same text as one request, same seed: the same samples (each sentence is the same job).
    whole = client.post("/generate", json={"text": TEXT, "seed": 7, "response_format": "pcm"})
    assert whole.status_code == 200
    live = np.frombuffer(bytes(got.audio), dtype="<i2").astype(np.int32)
    once = np.frombuffer(whole.content, dtype="<i2").astype(np.int32)
    assert live.shape == once.shape
    assert np.abs(live - once).max() <= 33  # 1e-3 of full scale: batch-mates may differ, rows may not


CLAUSES = "When the rain stops, we will walk to the park, and then we will eat."


def _say_in_pieces(ws: WebSocketTestSession, text: str, size: int = 3) -> None:
    for i in range(0, len(text), size):
        send(ws, type="speak", text=text[i : i + size])


def test_clause_chunking_says_each_settled_clause_at_once(client: TestClient[Any]) -> None:
    with client.websocket_connect(f"{ROUTE}?chunking=clause") as ws:
        _say_in_pieces(ws, "When the rain stops, we ")
        first = collect(ws, until="sentence")  # before the sentence is finished
        _say_in_pieces(ws, CLAUSES[len("When the rain stops, we ") :])
        send(ws, type="close")
        rest = collect(ws)
    sentences = first.of("sentence") + rest.of("sentence")
    assert [s["text"] for s in sentences] == [
        "When the rain stops,",
        "we will walk to the park,",
        "and then we will eat.",
    ]
    assert [s.get("continues", False) for s in sentences] == [True, True, False]  # captions: one line
    assert rest.of("done")[0]["sentences"] == 3
    assert rest.close_code == 1000


def test_auto_chunking_cuts_a_clause_only_while_the_listener_runs_low(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with client.websocket_connect(ROUTE) as ws:  # nothing in hand yet: the first clause goes at once
        _say_in_pieces(ws, "When the rain stops, we ")
        first = collect(ws, until="sentence")
        send(ws, type="clear")
        collect(ws, until="cleared")
    assert first.of("sentence")[0]["text"] == "When the rain stops,"
    assert first.of("sentence")[0]["continues"] is True

    monkeypatch.setattr(Listener, "LOW_WATER_S", -100.0)  # as if the listener had a long sentence in hand
    with client.websocket_connect(ROUTE) as ws:
        _say_in_pieces(ws, CLAUSES)
        send(ws, type="close")
        got = collect(ws)
    assert [(s["text"], s.get("continues")) for s in got.of("sentence")] == [(CLAUSES, None)]


def test_auto_chunking_says_a_settled_clause_when_the_text_stops_and_the_listener_runs_low(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    low = threading.Event()
    monkeypatch.setattr(Listener, "running_low", lambda self, now: low.is_set())
    before = client.get("/stats").json()["jobs_run"]
    with client.websocket_connect(ROUTE) as ws:
        _say_in_pieces(ws, "When the rain stops, we ")
        ws.send_text("a probe")  # answered once everything before it has been handled
        assert collect(ws, until="error").of("sentence") == []  # audio in hand: the sentence may finish
        low.set()  # the text stops coming, and the listener's audio runs low
        deadline = time.monotonic() + 30
        while client.get("/stats").json()["jobs_run"] == before:  # the settled clause is said, unasked
            assert time.monotonic() < deadline
            time.sleep(0.02)
        send(ws, type="close", text="walk.")
        got = collect(ws)
    said = [(s["text"], s.get("continues")) for s in got.of("sentence")]
    assert said == [("When the rain stops,", True), ("we walk.", None)]


def test_auto_chunking_cuts_nothing_while_a_full_batch_waits(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    for test_client in _client(gated, Settings(max_batch_size=1)):
        with test_client.websocket_connect(ROUTE) as busy, test_client.websocket_connect(ROUTE) as ws:
            gated.gate.clear()
            send(busy, type="speak", text="One in the model. One waiting for it. And so")
            assert gated.entered.wait(30)
            deadline = time.monotonic() + 30
            while test_client.get("/stats").json()["queue_depth"] < 1:  # a full batch (of one) waits
                assert time.monotonic() < deadline
                time.sleep(0.01)
            _say_in_pieces(ws, CLAUSES)  # nothing in hand, but a clause would only wait behind that batch
            ws.send_text("a probe")  # answered once everything before it has been handled
            assert collect(ws, until="error").of("sentence") == []
            gated.gate.set()
            send(ws, type="close")
            got = collect(ws)
            send(busy, type="close")
            collect(busy)
    assert [(s["text"], s.get("continues")) for s in got.of("sentence")] == [(CLAUSES, None)]


def _wait_for_jobs(client: TestClient[Any], more_than: int) -> None:
    deadline = time.monotonic() + 30
    while client.get("/stats").json()["jobs_run"] <= more_than:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_sentence_the_text_stops_after_is_said_without_a_flush(client: TestClient[Any]) -> None:
    before = client.get("/stats").json()["jobs_run"]
    with client.websocket_connect(ROUTE) as ws:
        _say_in_pieces(ws, "Let me check that.")  # then a tool call: nothing more for a while, no flush
        _wait_for_jobs(client, before)  # said once no text has come for settle_s (0.3 s)
        first = collect(ws, until="sentence")
        send(ws, type="speak", text="Found it", flush=True)  # a flush in the same message
        flushed = collect(ws, until="flushed")
        send(ws, type="close")
        rest = collect(ws)
    assert [s["text"] for s in first.of("sentence")] == ["Let me check that."]
    assert [s["text"] for s in flushed.of("sentence")] == ["Found it"]
    assert rest.of("sentence") == []
    assert rest.close_code == 1000


def test_text_that_stops_mid_sentence_waits_for_more(client: TestClient[Any]) -> None:
    before = client.get("/stats").json()["jobs_run"]
    with client.websocket_connect(f"{ROUTE}?settle_s=0.05&chunking=sentence") as ws:
        _say_in_pieces(ws, "Half a sen")
        time.sleep(0.5)  # ten times settle_s: a stop at the end would have been said by now
        assert client.get("/stats").json()["jobs_run"] == before
        send(ws, type="close", text="tence.")
        got = collect(ws)
    assert [s["text"] for s in got.of("sentence")] == ["Half a sentence."]


def test_open_sessions_and_the_engines_lateness_are_reported(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    long = "The first sentence is here, and it is long enough to play for a while. The "
    for test_client in _client(gated, Settings()):
        assert test_client.get("/stats").json()["live_sessions"] == 0
        with test_client.websocket_connect(f"{ROUTE}?speed=0.25&chunking=sentence") as ws:
            assert test_client.get("/stats").json()["live_sessions"] == 1
            send(ws, type="speak", text=long)
            playing = collect(ws, until="sentence").of("sentence")[0]["duration_s"]  # ~2 s of audio sent
            gated.gate.clear()  # the engine falls behind: the next sentence, given now, is held
            send(ws, type="speak", text="second one. And ")
            time.sleep(playing + 0.3)  # the listener has heard all of the first and waits
            gated.gate.set()
            send(ws, type="close")
            collect(ws)
        stats = test_client.get("/stats").json()
        assert stats["live_sessions"] == 0
        assert 0.2 < stats["live_late_s"] < 30  # from when the first ran out to when the second came
        metrics = test_client.get("/metrics").text
        assert "chorus_live_sessions 0.0" in metrics
        late = [line.split()[1] for line in metrics.splitlines() if line.startswith("chorus_live_late_seconds_total ")]
        assert float(late[0]) == pytest.approx(stats["live_late_s"], abs=1e-3)


def test_characters_the_model_cannot_say_are_named_on_their_sentence(client: TestClient[Any]) -> None:
    with client.websocket_connect(ROUTE) as ws:
        send(ws, type="speak", text="Die Straße ist lang. ")
        send(ws, type="close", text="All plain here.")
        got = collect(ws)
    first, second = got.of("sentence")
    assert first["unsaid"] == "ß"  # the tiny model has no "ß": reported, as X-Unsaid-Characters does
    assert "unsaid" not in second


def test_flush_says_what_waits_and_is_answered_after_its_audio(client: TestClient[Any]) -> None:
    with client.websocket_connect(ROUTE) as ws:
        send(ws, type="speak", text="An unfinished thought")
        send(ws, type="flush")
        first = collect(ws, until="flushed")
        send(ws, type="speak", text="Then more. ")
        send(ws, type="close")
        rest = collect(ws)
    assert [s["text"] for s in first.of("sentence")] == ["An unfinished thought"]
    assert first.order[-1][1]["type"] == "flushed"
    assert first.order[-2][0] == "audio"  # the audio before the flush went out before its answer
    assert first.of("flushed")[0]["audio_seconds"] == pytest.approx(len(first.audio) / 2 / 16000, abs=1e-3)
    assert [s["text"] for s in rest.of("sentence")] == ["Then more."]
    assert rest.close_code == 1000


def test_clear_drops_what_was_not_sent_and_the_session_goes_on(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    for test_client in _client(gated, Settings(max_batch_size=1)):
        before = test_client.get("/stats").json()["jobs_run"]
        with test_client.websocket_connect(ROUTE) as ws:
            gated.gate.clear()  # the model now waits: nothing said before the clear can finish first
            send(ws, type="speak", text="One to drop. Two to drop. Three to drop. ")
            send(ws, type="flush")
            send(ws, type="clear")
            cleared = collect(ws, until="cleared")
            gated.gate.set()
            send(ws, type="speak", text="Kept after the clear.")
            send(ws, type="close")
            rest = collect(ws)
        assert cleared.of("sentence") == []
        assert [s["text"] for s in rest.of("sentence")] == ["Kept after the clear."]
        assert rest.of("flushed") == []  # the flush before the clear was dropped with its audio
        assert rest.close_code == 1000
        # At most the sentence already in the model when the clear came, then the kept one: the two
        # still queued were dropped unsynthesized.
        assert test_client.get("/stats").json()["jobs_run"] - before <= 2


def test_bad_messages_are_answered_and_the_session_goes_on(client: TestClient[Any]) -> None:
    with client.websocket_connect(ROUTE) as ws:
        ws.send_text("not json")
        ws.send_bytes(b"\x00\x01")
        send(ws, type="shout", text="hi")
        send(ws, type="speak", text="hi", volume=11)
        send(ws, type="speak", text="x" * 5001)
        send(ws, type="close", text="Still here.")
        got = collect(ws)
    errors = got.of("error")
    assert [e["status_code"] for e in errors] == [400, 400, 400, 400, 422]
    assert "JSON" in errors[0]["detail"]
    assert "JSON text frames" in errors[1]["detail"]
    assert "shout" in errors[2]["detail"] or "type" in errors[2]["detail"]
    assert "volume" in errors[3]["detail"]
    assert "5001" in errors[4]["detail"]
    assert [s["text"] for s in got.of("sentence")] == ["Still here."]
    assert got.close_code == 1000


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("speed=9", 400, "speed"),
        ("voice=nobody", 400, "nobody"),
        ("model=gpt-9", 404, "gpt-9"),
        ("response_format=xyz", 422, "xyz"),
        ("text_format=ssml", 400, "text_format"),
        ("colour=blue", 400, "colour"),
        ("chunking=words", 400, "chunking"),
        ("settle_s=0", 400, "settle_s"),
    ],
)
def test_a_bad_configuration_is_refused_with_a_reason(
    client: TestClient[Any], query: str, status: int, words: str
) -> None:
    with client.websocket_connect(f"{ROUTE}?{query}") as ws:
        got = collect(ws)
    assert got.close_code == 1008
    assert len(got.events) == 1
    assert got.events[0]["status_code"] == status
    assert words in got.events[0]["detail"]


def test_other_formats_stream_their_own_frames(client: TestClient[Any]) -> None:
    with client.websocket_connect(f"{ROUTE}?response_format=wav&sample_rate=24000") as ws:
        send(ws, type="close", text="A short one.")
        got = collect(ws)
    assert bytes(got.audio[:4]) == b"RIFF"
    assert got.of("done")[0]["sample_rate"] == 24000
    with client.websocket_connect(f"{ROUTE}?response_format=mulaw") as ws:  # a telephone line (Twilio, SIP)
        send(ws, type="close", text="A short one.")
        got = collect(ws)
    done = got.of("done")[0]
    assert done["sample_rate"] == 8000
    assert abs(len(got.audio) - done["audio_seconds"] * 8000) <= 8  # one byte a sample at 8 kHz


def test_the_api_key_is_required(tiny_backend: Any) -> None:
    for test_client in _client(tiny_backend, Settings(api_keys=("sekret-key",))):
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            with test_client.websocket_connect(ROUTE, headers=headers) as ws:
                send(ws, type="close", text="Not allowed.")
                refused = collect(ws)
            assert refused.close_code == 4401
            assert [e["status_code"] for e in refused.events] == [401]
            assert "API key" in refused.events[0]["detail"]
            assert "wrong" not in refused.events[0]["detail"]
        with test_client.websocket_connect(ROUTE, headers={"Authorization": "Bearer sekret-key"}) as ws:
            send(ws, type="close", text="Allowed.")
            got = collect(ws)
        assert got.close_code == 1000
        assert got.of("sentence")
        metrics = test_client.get("/metrics", headers={"X-API-Key": "sekret-key"}).text
        assert 'chorus_requests_total{route="/v1/audio/speech/stream-input",status="101"} 4.0' in metrics


def test_overload_refuses_the_session_with_retry_after(tiny_backend: Any) -> None:
    gated = GatedBackend(tiny_backend)
    for test_client in _client(gated, Settings(max_queue=1, max_batch_size=1)):
        gated.gate.clear()
        with test_client.websocket_connect(ROUTE) as first, test_client.websocket_connect(ROUTE) as second:
            send(first, type="speak", text="One sentence. Two sentences. Three. ")  # fills the queue
            send(first, type="flush")
            assert gated.entered.wait(10)  # the model holds the first sentence: no batch leaves the queue
            deadline = time.monotonic() + 10
            while test_client.get("/stats").json()["queue_depth"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            send(second, type="close", text="Me too.")
            refused = collect(second)
            gated.gate.set()
            send(first, type="close")
            served = collect(first)
        assert refused.close_code == 1013
        assert refused.events[-1]["status_code"] == 429
        assert refused.events[-1]["retry_after_s"] >= 1
        assert served.close_code == 1000
        assert len(served.of("sentence")) == 3


def test_a_draining_server_says_what_the_session_was_given_then_ends_it(client: TestClient[Any]) -> None:
    from service.state import Phase

    with client.websocket_connect(ROUTE) as ws:
        send(ws, type="speak", text="Said before the drain. And this half")
        first = collect(ws, until="sentence")
        assert first.of("sentence")[0]["text"] == "Said before the drain."
        client.app.state.chorus.phase = Phase.DRAINING  # what SIGTERM does first
        rest = collect(ws)
    assert [s["text"] for s in rest.of("sentence")] == ["And this half"]
    assert rest.events[-1]["type"] == "done"
    assert rest.close_code == 1012  # service restart: reconnect to another worker


def test_a_session_opened_while_the_model_loads_is_told_when_to_come_back(tiny_backend: Any) -> None:
    loading = GatedBackend(tiny_backend, gate_warmup=True)
    with TestClient(create_app(Settings(), backend=loading)) as test_client:
        with test_client.websocket_connect(ROUTE) as ws:
            got = collect(ws)
        loading.gate.set()
    assert got.close_code == 1013
    assert got.events[0]["status_code"] == 503
    assert got.events[0]["retry_after_s"] == 5


def test_a_failed_synthesis_ends_the_session_with_500_and_no_internals(tiny_backend: Any) -> None:
    failing = GatedBackend(tiny_backend)
    for test_client in _client(failing, Settings()):
        failing.fail = True  # the model now raises on every batch (the app stays up)
        with test_client.websocket_connect(ROUTE) as ws:
            send(ws, type="close", text="This cannot be said.")
            got = collect(ws)
        assert got.close_code == 1011
        assert got.events == [{"type": "error", "status_code": 500, "detail": "synthesis failed"}]
        failing.fail = False
        assert test_client.post("/generate", json={"text": "Still serving."}).status_code == 200


class GatedBackend:
    """The real tiny backend, whose batches wait while ``gate`` is closed (or fail while ``fail`` is set)."""

    def __init__(self, inner: Any, *, gate_warmup: bool = False) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate_warmup = gate_warmup
        if not gate_warmup:
            self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def warmup(self) -> None:
        if self.gate_warmup:
            assert self.gate.wait(30)
        self.inner.warmup()

    def synthesize(self, jobs: Any) -> Any:
        return [voiced.audio for voiced in self.synthesize_timed(jobs)]

    def synthesize_timed(self, jobs: Any) -> Any:  # what the engine runs (a timed backend's batches)
        if self.fail:
            raise RuntimeError("injected failure with internals: /secret/path")
        if not self.gate.is_set():
            self.entered.set()
        assert self.gate.wait(30)
        return self.inner.synthesize_timed(jobs)


def test_an_idle_session_is_closed_with_a_reason(tiny_backend: Any) -> None:
    for test_client in _client(tiny_backend, Settings(live_idle_timeout_s=1.0)):
        with test_client.websocket_connect(ROUTE) as ws:
            send(ws, type="speak", text="Spoken, then silence from the client. ")
            send(ws, type="flush")
            got = collect(ws)  # nothing more is sent: the session ends by itself
        assert [s["text"] for s in got.of("sentence")] == ["Spoken, then silence from the client."]
        assert got.of("flushed")  # the audio went out first: only then did the idle time start
        assert got.events[-1]["status_code"] == 408
        assert got.close_code == 4408
