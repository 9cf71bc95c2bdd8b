"""Several models at once (CHORUS_MODELS): routed by language and by model name, one shared batcher."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings, SettingsError
from tests.helpers import ping_after_loading
from tests.tiny_model import write_tiny_speecht5


@pytest.fixture(scope="module")
def speecht5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_speecht5(tmp_path_factory.mktemp("speecht5"))


@pytest.fixture
async def client(tiny_vits_dir: Path, speecht5_dir: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    env = {"CHORUS_MODELS": f"en={tiny_vits_dir}, de={speecht5_dir}", "CHORUS_DEVICE": "cpu"}
    app = create_app(Settings.from_env(env))
    async with AsyncTestClient(app) as test_client:
        response = await ping_after_loading(test_client, timeout_s=120)
        assert response.status_code == 200, response.text
        yield test_client


def frames(data: bytes) -> int:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes()


async def test_languages_route_to_their_models(client: AsyncTestClient[Any], speecht5_dir: Path) -> None:
    english = await client.post("/generate", json={"text": "Hello there.", "language": "en-US", "seed": 1})
    german = await client.post("/generate", json={"text": "Hello there.", "language": "de", "voice": "bob", "seed": 1})
    assert english.status_code == 200
    assert german.status_code == 200
    assert frames(english.content) != frames(german.content)  # two different models answered
    # Voices belong to their model: the VITS model has none, SpeechT5 has alice and bob.
    wrong = await client.post("/generate", json={"text": "Hello.", "language": "en", "voice": "bob"})
    assert wrong.status_code == 422
    unknown = await client.post("/generate", json={"text": "Hello.", "language": "fr"})
    assert unknown.status_code == 422
    assert "served languages: en, de" in unknown.json()["detail"]


async def test_the_openai_route_selects_by_model_name(client: AsyncTestClient[Any], tiny_vits_dir: Path) -> None:
    models = (await client.get("/v1/models")).json()["data"]
    names = [m["id"] for m in models]
    assert names[:2] == [tiny_vits_dir.name, names[1]]
    speecht5 = names[1]
    voices = (await client.get("/v1/audio/voices", params={"model": speecht5})).json()["data"]
    assert [v["id"] for v in voices] == ["alice", "bob"]
    assert (await client.get("/v1/audio/voices")).json()["data"] == [
        {"id": "default", "object": "voice", "default": True}
    ]
    body = {"model": speecht5, "input": "Hi.", "voice": "bob", "response_format": "wav", "seed": 3}
    speech = await client.post("/v1/audio/speech", json=body)
    assert speech.status_code == 200
    missing = await client.get("/v1/audio/voices", params={"model": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_malformed_routes_are_refused_naming_the_setting() -> None:
    for value in ("en", "=dir", "en=", "en=a,en=b"):
        with pytest.raises(SettingsError, match="CHORUS_MODELS"):
            Settings.from_env({"CHORUS_MODELS": value})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"CHORUS_MODELS": "en=a", "CHORUS_MODEL": "b"})
