"""espeak-ng through Piper's bridge: the voice is set only when it changes, and that changes no phonemes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from inference.backends import espeak
from inference.backends.espeak import EspeakPhonemizer

TEXTS = (
    "Hello there, how are you today?",
    "Dr. Smith lives at 221B Baker St. since 1887!",
    "नमस्ते दुनिया and then English again.",  # espeak-ng switches language mid-text: "(hi)...(en-us)"
    "The café served crème brûlée; it cost $4.50.",
    "Guten Tag, wie geht es Ihnen?",
)


class _CountingBridge:
    """The real bridge, with its set_voice calls counted."""

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge
        self.voices_set: list[str] = []

    def set_voice(self, voice: str) -> None:
        self.voices_set.append(voice)
        self._bridge.set_voice(voice)

    def get_phonemes(self, text: str) -> Any:
        return self._bridge.get_phonemes(text)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountingBridge]:
    bridge = _CountingBridge(espeak._load_bridge())
    monkeypatch.setattr(espeak, "_bridge", bridge)
    espeak._voice = None  # unknown: the first call sets its voice
    yield bridge
    espeak._voice = None  # these tests leave espeak-ng on voices other tests do not expect


def _fresh(voice: str, text: str) -> list[list[str]]:
    """Phonemes with the voice set right before, as Piper itself does on every call."""
    bridge = espeak._load_bridge()
    with espeak._lock:
        bridge.set_voice(voice)
        espeak._voice = voice
    return EspeakPhonemizer(voice).phonemize(text)


def test_the_voice_is_set_once_while_it_stays_the_same(counting: _CountingBridge) -> None:
    english = EspeakPhonemizer("en-us")
    for text in TEXTS:
        english.phonemize(text)
    assert counting.voices_set == ["en-us"]


def test_a_change_of_voice_is_set_each_time(counting: _CountingBridge) -> None:
    english, german = EspeakPhonemizer("en-us"), EspeakPhonemizer("de")
    for phonemizer in (english, german, german, english):
        phonemizer.phonemize("Hallo.")
    assert counting.voices_set == ["en-us", "de", "en-us"]


def test_phonemes_do_not_depend_on_what_was_said_before(counting: _CountingBridge) -> None:
    voices = ("en-us", "de")
    expected = {(voice, text): _fresh(voice, text) for voice in voices for text in TEXTS}
    phonemizers = {voice: EspeakPhonemizer(voice) for voice in voices}
    # Every ordered pair of (voice, text), so each text follows each other text, with and without a switch.
    for first, second in itertools.permutations(expected, 2):
        for voice, text in (first, second):
            assert phonemizers[voice].phonemize(text) == expected[(voice, text)], (first, second)


def test_a_voice_espeak_lacks_raises_and_is_not_taken_as_set(counting: _CountingBridge) -> None:
    english = EspeakPhonemizer("en-us")
    before = english.phonemize("Hello there.")
    with pytest.raises(RuntimeError, match="voice"):
        EspeakPhonemizer("no-such-voice").phonemize("Hello there.")
    # espeak-ng's voice after a failed set is not what it was: the next call sets its own again.
    assert english.phonemize("Hello there.") == before
    assert counting.voices_set == ["en-us", "no-such-voice", "en-us"]
