"""Model families other than VITS through the real server (``chorus serve``), on tiny random checkpoints."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.server import Server, post, running_server, wait_for_status
from tests.tiny_model import write_tiny_bark, write_tiny_csm, write_tiny_speecht5

pytestmark = pytest.mark.slow

TEXTS = ["Hello there.", "A much longer sentence to say here.", "Hi.", "How are you today?", "The quick fox."]


@pytest.fixture(scope="module")
def speecht5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_speecht5(tmp_path_factory.mktemp("speecht5"))


@pytest.fixture(scope="module")
def speecht5_server(speecht5_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CHORUS_MODEL": str(speecht5_dir), "CHORUS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("speecht5-server"), env) as server:
        yield server


def call(server: Server, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return post(server, body, path=path)


def samples(wav_bytes: bytes, rate: int = 16000) -> np.ndarray:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert wav.getframerate() == rate
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def test_speecht5_speaks_with_its_voices_and_reproduces_seeds(speecht5_server: Server) -> None:
    status, headers, body = call(speecht5_server, "/generate", {"text": "Hello there, 42!", "voice": "bob", "seed": 5})
    assert status == 200, body
    assert headers["content-type"] == "audio/wav"
    assert len(samples(body)) > 0
    assert abs(len(samples(body)) / 16000 - float(headers["x-audio-duration-s"])) < 0.001
    again = call(speecht5_server, "/generate", {"text": "Hello there, 42!", "voice": "bob", "seed": 5})[2]
    assert again == body  # the prenet's dropout is seeded per row
    with urllib.request.urlopen(speecht5_server.url + "/v1/audio/voices", timeout=10) as response:
        voices = json.loads(response.read())
    assert [v["id"] for v in voices["data"]] == ["alice", "bob"]
    status, _, error = call(speecht5_server, "/generate", {"text": "Hello.", "voice": "carol"})
    assert status == 422
    assert "alice, bob" in json.loads(error)["detail"]
    status, headers, mp3 = call(
        speecht5_server, "/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": "alloy"}
    )
    assert status == 200
    assert headers["content-type"] == "audio/mpeg"
    assert len(mp3) > 100


def test_speecht5_batches_concurrent_requests_exactly(speecht5_server: Server) -> None:
    def one(index: int) -> tuple[int, dict[str, str], bytes]:
        return call(speecht5_server, "/generate", {"text": TEXTS[index], "seed": 100 + index})

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        together = list(pool.map(one, range(len(TEXTS))))
    assert all(status == 200 for status, _, _ in together)
    assert max(int(headers["x-batch-size"]) for _, headers, _ in together) > 1
    for index, (_, _, body) in enumerate(together):
        status, headers, alone = one(index)
        assert status == 200
        assert headers["x-batch-size"] == "1"
        a, b = samples(alone).astype(np.int32), samples(body).astype(np.int32)
        assert len(a) == len(b)  # every row trimmed to its own length
        assert int(np.abs(a - b).max()) <= 1


def test_speecht5_without_speakers_reports_why_on_ping(speecht5_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(speecht5_dir, bare, ignore=shutil.ignore_patterns("speakers"))
    with running_server(tmp_path, {"CHORUS_MODEL": str(bare)}, wait_ready=False) as server:
        wait_for_status(server, {503})
        try:
            urllib.request.urlopen(server.url + "/ping", timeout=5)
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read())["detail"]
        assert "CHORUS_SPEAKERS_DIR" in detail
        assert "x-vectors" in detail


@pytest.fixture(scope="module")
def bark_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = write_tiny_bark(tmp_path_factory.mktemp("bark"))
    env = {"CHORUS_MODEL": str(model), "CHORUS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("bark-server"), env) as server:
        yield server


def test_bark_speaks_batches_by_voice_and_repeats_seeded_requests(bark_server: Server) -> None:
    body = {"text": "hello world.", "voice": "narrator", "seed": 9}
    status, headers, first = call(bark_server, "/generate", body)
    assert status == 200, first
    assert headers["x-batch-size"] == "1"
    assert len(samples(first, 24000)) > 0
    assert call(bark_server, "/generate", body)[2] == first  # a seeded request runs alone, seeded: it repeats
    status, _, refused = call(bark_server, "/generate", {"text": "hello.", "speed": 2.0})
    assert status == 422
    assert "speed is not supported" in json.loads(refused)["detail"]

    def unseeded(index: int) -> tuple[int, dict[str, str], bytes]:
        return call(bark_server, "/generate", {"text": TEXTS[index].lower()})

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        answers = list(pool.map(unseeded, range(len(TEXTS))))
    assert all(status == 200 for status, _, _ in answers)
    assert max(int(headers["x-batch-size"]) for _, headers, _ in answers) > 1  # unseeded requests share


@pytest.fixture(scope="module")
def csm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = write_tiny_csm(tmp_path_factory.mktemp("csm"))
    env = {"CHORUS_MODEL": str(model), "CHORUS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("csm-server"), env) as server:
        yield server


def test_csm_speaks_as_its_speakers_and_repeats_seeded_requests(csm_server: Server) -> None:
    body = {"text": "Hello there, 42!", "voice": "1", "seed": 9}
    status, headers, first = call(csm_server, "/generate", body)
    assert status == 200, first
    assert headers["x-batch-size"] == "1"
    audio = samples(first, 24000)
    assert len(audio) > 0
    assert len(audio) % 1920 == 0  # whole Mimi frames
    assert abs(len(audio) / 24000 - float(headers["x-audio-duration-s"])) < 0.001
    assert call(csm_server, "/generate", body)[2] == first
    with urllib.request.urlopen(csm_server.url + "/v1/audio/voices", timeout=10) as response:
        assert [v["id"] for v in json.loads(response.read())["data"]] == ["0", "1"]
    status, _, refused = call(csm_server, "/generate", {"text": "Hello.", "speed": 2.0})
    assert status == 422
    assert "speed is not supported" in json.loads(refused)["detail"]
    status, _, refused = call(csm_server, "/generate", {"text": "Hello.", "voice": "5"})
    assert status == 422
    assert "0, 1" in json.loads(refused)["detail"]
    status, headers, flac = call(
        csm_server, "/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "flac"}
    )
    assert status == 200
    assert headers["content-type"] == "audio/flac"
    assert flac[:4] == b"fLaC"


def test_csm_batches_greedy_requests_of_both_speakers_exactly(csm_server: Server) -> None:
    def one(index: int) -> tuple[int, dict[str, str], bytes]:
        return call(csm_server, "/generate", {"text": TEXTS[index], "voice": str(index % 2), "temperature": 0})

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        together = list(pool.map(one, range(len(TEXTS))))
    assert all(status == 200 for status, _, _ in together)
    assert max(int(headers["x-batch-size"]) for _, headers, _ in together) > 1
    for index, (_, _, body) in enumerate(together):
        status, headers, alone = one(index)
        assert status == 200
        assert headers["x-batch-size"] == "1"
        a, b = samples(alone, 24000).astype(np.int32), samples(body, 24000).astype(np.int32)
        assert len(a) == len(b)  # every row trimmed to its own length
        assert int(np.abs(a - b).max()) <= 1
