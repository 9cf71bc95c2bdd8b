"""The playground's routes in process: served without a key, locked down, and off when told."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.playground import STATIC_DIR
from service.settings import Settings
from tests.helpers import ping_after_loading

KEY = "page-key-77"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.label_for: set[str] = set()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids[found["id"]] = tag
        if tag == "label" and found.get("for"):
            self.label_for.add(str(found["for"]))
        for name in ("src", "href"):
            if found.get(name):
                self.sources.append(str(found[name]))


async def test_the_page_and_its_files_need_no_key_but_the_api_still_does(tiny_backend: Any) -> None:
    app = create_app(Settings(api_keys=(KEY,)), backend=tiny_backend)
    async with AsyncTestClient(app) as client:
        assert (await ping_after_loading(client)).status_code == 200
        root = await client.get("/", follow_redirects=False)
        assert root.status_code in (302, 307)
        assert root.headers["location"] == "/playground"
        page = await client.get("/playground")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"  # once, not twice
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        for name in ("playground.js", "playground.css"):
            asset = await client.get(f"/playground/static/{name}")
            assert asset.status_code == 200
            assert asset.content == (STATIC_DIR / name).read_bytes()
        config = (await client.get("/playground/config")).json()
        assert config == {"auth_required": True, "max_input_chars": 4096, "docs": "auth"}
        assert KEY not in page.text
        assert KEY not in json.dumps(config)
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/playground/static/../../settings.py")).status_code in (400, 404)


async def test_the_page_loads_nothing_from_elsewhere_and_labels_every_control() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    collector = _Collector()
    collector.feed(html)
    external = [s for s in collector.sources if re.match(r"^(https?:)?//", s)]
    assert external == []  # no CDN: works offline
    controls = [i for i, tag in collector.ids.items() if tag in ("input", "select", "textarea")]
    assert controls
    assert all(control in collector.label_for for control in controls)
    script = (STATIC_DIR / "playground.js").read_text()
    # The key may only live in memory: no storage API, and it never goes into a URL.
    assert "localStorage" not in script
    assert "sessionStorage" not in script
    assert "document.cookie" not in script
    assert "<script>" not in html  # no inline script: the CSP allows 'self' only


async def test_sse_done_event_reports_duration_batch_and_seed(tiny_backend: Any) -> None:
    app = create_app(Settings(), backend=tiny_backend)
    async with AsyncTestClient(app) as client:
        assert (await ping_after_loading(client)).status_code == 200
        body = {"model": "chorus", "input": "One. Two.", "response_format": "pcm", "stream_format": "sse", "seed": 7}
        response = await client.post("/v1/audio/speech", json=body)
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
        done = events[-1]
        assert done["type"] == "speech.audio.done"
        summary = done["chorus"]
        assert summary["seed"] == 7
        assert summary["sample_rate"] == 24000
        assert summary["batch_size"] >= 1
        whole = await client.post("/generate", json={"text": "One. Two.", "seed": 7})
        assert summary["audio_seconds"] == float(whole.headers["x-audio-duration-s"])
        assert abs(len(audio) / 2 / 24000 - summary["audio_seconds"]) < 0.01


async def test_chorus_playground_0_leaves_it_out(tiny_backend: Any) -> None:
    app = create_app(Settings(playground=False), backend=tiny_backend)
    async with AsyncTestClient(app) as client:
        assert (await ping_after_loading(client)).status_code == 200
        for path in ("/", "/playground", "/playground/config", "/playground/static/playground.js"):
            assert (await client.get(path, follow_redirects=False)).status_code == 404, path
        assert Settings.from_env({"CHORUS_PLAYGROUND": "0"}).playground is False
        assert Settings.from_env({"CHORUS_PLAYGROUND": "off"}).playground is False
        assert Settings.from_env({}).playground is True


def test_the_script_parses() -> None:
    """A syntax error would only show in a browser; node (when present) finds it in a second."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH")
    done = subprocess.run([node, "--check", str(STATIC_DIR / "playground.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
