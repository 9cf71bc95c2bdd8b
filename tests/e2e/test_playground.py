"""The web playground in a real browser: Debian's headless Chromium, driven by Playwright, on the real voice.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it; Playwright's own browser
download cannot work on these machines). Without it these tests skip, unless CHORUS_REQUIRE_BROWSER=1
(set by CI) turns the absence into a failure.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server, running_server

pytestmark = pytest.mark.slow

KEY = "playground-test-key-5f2c"
SENTENCE = "Hello from the playground. This second sentence streams after the first one."
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Flags that keep Chromium from reaching for Google's services on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CHORUS_REQUIRE_BROWSER") == "1":
        pytest.fail("CHORUS_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("no chromium on PATH (apt-get install chromium); CI installs it")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Server]:
    env = {"CHORUS_CACHE_DIR": str(cache_dir), "API_KEY": KEY}
    with running_server(tmp_path_factory.mktemp("playground"), env) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # A phone-width viewport: the page must be usable there.
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def until(page: Any, expression: str, timeout_s: float = 60.0) -> Any:
    """Poll an expression in the page (the page's CSP forbids the eval that wait_for_function needs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never true within {timeout_s} s: {expression}")


def text_of(page: Any, selector: str) -> str:
    return str(page.text_content(selector) or "").strip()


def enter_key(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    until(page, "!document.getElementById('key-section').hidden")
    assert page.evaluate("document.activeElement.id") == "api-key"  # the prompt takes the focus
    page.fill("#api-key", KEY)
    page.keyboard.press("Enter")
    until(page, "document.getElementById('key-section').hidden")
    assert "en_US-joe-medium" in text_of(page, "#server-line")


def wav_of(server: Server, seed: str) -> tuple[float, float]:
    """The WAV /generate returns for the sentence and seed: its header's duration and its frames'."""
    request = urllib.request.Request(
        server.url + "/generate",
        data=json.dumps({"text": SENTENCE, "seed": int(seed)}).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        header_s = float(response.headers["X-Audio-Duration-S"])
        with wave.open(io.BytesIO(response.read())) as wav:
            return header_s, wav.getnframes() / wav.getframerate()


def test_speak_streams_plays_and_reports_what_the_api_returns(page: Any, keyed_server: Server) -> None:
    enter_key(page, keyed_server)
    page.fill("#text", SENTENCE)
    page.click("#speak")
    # Playing while it streams: the <audio> element's clock moves.
    until(page, "document.getElementById('player').currentTime > 0.2")
    until(page, "document.getElementById('fact-duration').textContent.endsWith(' s')")
    shown_s = float(text_of(page, "#fact-duration").removesuffix(" s"))
    seed = text_of(page, "#fact-seed")
    assert seed.isdigit()
    header_s, frames_s = wav_of(keyed_server, seed)
    assert abs(shown_s - header_s) <= 0.001
    assert abs(shown_s - frames_s) <= 0.001
    # The mp3 the element played lasts as long, give or take the encoder's padding.
    played_s = page.evaluate("document.getElementById('player').duration")
    assert abs(played_s - frames_s) <= 0.15
    assert int(text_of(page, "#fact-batch")) >= 1
    # Captions: the sentence's words, each lit in turn as the audio reaches it (word timestamps).
    assert text_of(page, "#captions") == SENTENCE
    until(page, "document.querySelectorAll('#captions span.said').length >= 3")
    starts = page.evaluate("[...document.querySelectorAll('#captions span')].map((s) => Number(s.dataset.start))")
    assert starts == sorted(starts)
    assert starts[-1] < frames_s
    assert text_of(page, "#fact-first-audio").endswith(" s")
    assert (
        float(text_of(page, "#fact-first-audio").removesuffix(" s"))
        <= float(text_of(page, "#fact-total").removesuffix(" s")) + 1.0
    )
    # The snippets repeat the request, seed included, with the key elided.
    curl = text_of(page, "#curl-snippet")
    python = text_of(page, "#python-snippet")
    assert f'"seed":{seed}' in curl
    assert "$CHORUS_API_KEY" in curl
    assert f'"seed": {seed}' in python
    assert 'os.environ["CHORUS_API_KEY"]' in python
    # History: the clip with a download link of the chosen format.
    assert page.evaluate("document.querySelectorAll('#history li').length") == 1
    assert page.get_attribute("#history li a", "download") == f"chorus-{seed}.mp3"
    # The key is in no storage, no URL, no cookie, and not on the page.
    assert KEY not in page.url
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []
    assert KEY not in page.content()
    # Usable at phone width: nothing sticks out sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)


def test_wav_streams_through_web_audio_with_the_same_duration(page: Any, keyed_server: Server) -> None:
    enter_key(page, keyed_server)
    page.fill("#text", SENTENCE)
    page.fill("#seed", "424242")
    page.select_option("#format", "wav")
    page.keyboard.press("Tab")
    page.click("#speak")
    until(page, "document.getElementById('fact-first-audio').textContent.endsWith(' s')")
    until(page, "document.getElementById('fact-duration').textContent.endsWith(' s')")
    _, frames_s = wav_of(keyed_server, "424242")
    assert abs(float(text_of(page, "#fact-duration").removesuffix(" s")) - frames_s) <= 0.001
    assert text_of(page, "#fact-seed") == "424242"
    # The finished clip is a proper WAV (sizes patched in) of the same length.
    until(page, "document.getElementById('player').duration > 0")
    assert abs(page.evaluate("document.getElementById('player').duration") - frames_s) <= 0.01


def test_ssml_from_the_page_pauses_where_it_says(page: Any, keyed_server: Server) -> None:
    enter_key(page, keyed_server)
    document = '<speak>Hello from the playground.<break time="1500ms"/>A pause came first.</speak>'
    page.fill("#text", document)
    page.fill("#seed", "7")
    page.select_option("#text-format", "ssml")
    page.click("#speak")
    until(page, "document.getElementById('fact-duration').textContent.endsWith(' s')")
    shown_s = float(text_of(page, "#fact-duration").removesuffix(" s"))
    request = urllib.request.Request(
        keyed_server.url + "/generate",
        data=json.dumps({"text": "Hello from the playground. A pause came first.", "seed": 7}).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        without_pause_s = float(response.headers["X-Audio-Duration-S"])
    assert abs(shown_s - (without_pause_s + 1.5)) <= 0.001  # the same sentences and seeds, 1.5 s apart
    assert '"text_format":"ssml"' in text_of(page, "#curl-snippet")
    assert '"text_format": "ssml"' in text_of(page, "#python-snippet")


def test_a_wrong_key_shows_the_servers_error(page: Any, keyed_server: Server) -> None:
    page.goto(keyed_server.url + "/")
    until(page, "!document.getElementById('key-section').hidden")
    assert "needs an API key" in text_of(page, "#server-line")
    page.fill("#api-key", "not-the-key")
    page.click("#key-submit")
    until(page, "!document.getElementById('error').hidden")
    assert text_of(page, "#error") == "The server said: 401 the API key is not valid"
    # Speaking without a good key asks for one instead of calling the API.
    page.click("#speak")
    assert text_of(page, "#error") == "Enter the API key first."
    assert page.evaluate("document.activeElement.id") == "api-key"


def test_the_page_is_keyboard_usable(page: Any, keyed_server: Server) -> None:
    enter_key(page, keyed_server)
    # Every control has a label, and Tab reaches the controls in order with a visible focus ring.
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
             .filter((el) => !document.querySelector(`label[for="${el.id}"]`)).map((el) => el.id)"""
    )
    assert unlabelled == []
    page.focus("#text")
    reached = []
    for _ in range(9):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert reached[:8] == ["model", "voice", "format", "speed", "temperature", "seed", "text-format", "speak"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
