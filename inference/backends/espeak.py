"""espeak-ng phonemes the way Piper voices were trained on them, through piper-tts's espeak bridge.

The bridge (``piper/espeakbridge.so``, espeak-ng 1.52 with its data) is loaded on its own: importing the
``piper`` package would import onnxruntime, which serving a converted checkpoint never needs.
espeak-ng is GPL-3 (see the README).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from inference.errors import ModelLoadError

__all__ = ["EspeakPhonemizer"]

_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")  # espeak marks words read in another language: (en)...(fr)
_CLAUSE_PAUSES = (",", ":", ";")

_lock = threading.Lock()  # espeak-ng keeps global state (voice, buffers): one caller at a time, process-wide
_bridge: ModuleType | None = None
# The voice espeak-ng has now (guarded by _lock). Setting it costs about half as much as phonemizing a
# sentence (143 against 276 us on the 2-core AMD EPYC VM) and the bridge holds the GIL throughout, so it is
# set only when it changes: a text leaves espeak-ng on the voice it started with (language switches inside
# a text, "(hi)...(en-us)", switch back), tested in tests/unit/inference/test_espeak.py.
_voice: str | None = None


def _load_bridge() -> ModuleType:
    global _bridge
    if _bridge is not None:
        return _bridge
    spec = importlib.util.find_spec("piper")  # locates the package without running its __init__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in map(Path, locations):
        for candidate in sorted(folder.glob("espeakbridge*.so")) + sorted(folder.glob("espeakbridge*.pyd")):
            loader = importlib.machinery.ExtensionFileLoader("espeakbridge", str(candidate))
            module_spec = importlib.util.spec_from_loader("espeakbridge", loader)
            if module_spec is None:  # pragma: no cover
                continue
            module = importlib.util.module_from_spec(module_spec)
            loader.exec_module(module)
            module.initialize(str(folder / "espeak-ng-data"))
            _bridge = module
            return module
    raise ModelLoadError("Piper voices need espeak-ng from the piper-tts package: install chorus-tts[voice]")


class EspeakPhonemizer:
    """Text → IPA phonemes (NFD code points), grouped by sentence, punctuation kept as Piper keeps it."""

    def __init__(self, voice: str, vowel_clusters: Iterable[tuple[str, ...]] | None = None) -> None:
        self.voice = voice
        self._clusters = {tuple(c) for c in vowel_clusters or ()}
        self._longest = max((len(c) for c in self._clusters), default=0)

    def phonemize(self, text: str) -> list[list[str]]:
        """One list of phonemes per sentence espeak finds."""
        global _voice
        with _lock:
            bridge = _load_bridge()
            if _voice != self.voice:
                _voice = None  # unknown until set_voice returns (it may raise)
                bridge.set_voice(self.voice)
                _voice = self.voice
            clauses: list[tuple[str, str, bool]] = bridge.get_phonemes(text)
        sentences: list[list[str]] = []
        current: list[str] = []
        for phonemes, terminator, end_of_sentence in clauses:
            clause = _LANGUAGE_SWITCH.sub("", phonemes) + terminator
            if terminator in _CLAUSE_PAUSES:
                clause += " "
            current.extend(unicodedata.normalize("NFD", clause))
            if end_of_sentence:
                sentences.append(self._merge_clusters(current))
                current = []
        if current:
            sentences.append(self._merge_clusters(current))
        return sentences

    def _merge_clusters(self, phonemes: list[str]) -> list[str]:
        if not self._clusters:
            return phonemes
        merged: list[str] = []
        i = 0
        while i < len(phonemes):
            for size in range(min(self._longest, len(phonemes) - i), 1, -1):
                if tuple(phonemes[i : i + size]) in self._clusters:
                    merged.append("".join(phonemes[i : i + size]))
                    i += size
                    break
            else:
                merged.append(phonemes[i])
                i += 1
        return merged
