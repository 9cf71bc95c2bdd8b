"""Text → token ids: the MMS character tokenizer, or espeak-ng phonemes for Piper voices."""

from __future__ import annotations

import functools
import json
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inference.backends.align import BREAK, align_words
from inference.backends.base import WordSpan
from inference.backends.espeak import EspeakPhonemizer
from inference.errors import InvalidTextError, ModelLoadError
from inference.text.normalize import normalize

__all__ = ["PIPER_CONFIG_NAME", "MmsFrontend", "PiperFrontend", "TextFrontend", "load_frontend"]

#: The Piper voice config (the original ``.onnx.json``) as stored beside a converted checkpoint.
PIPER_CONFIG_NAME = "piper.json"

# ISO 639-3 codes found in MMS tokenizer configs → the two-letter codes most clients send.
_ISO3_TO_ISO1 = {
    "eng": "en", "fra": "fr", "deu": "de", "spa": "es", "por": "pt", "ita": "it", "nld": "nl",
    "rus": "ru", "ukr": "uk", "pol": "pl", "tur": "tr", "ara": "ar", "hin": "hi", "ben": "bn",
    "vie": "vi", "ind": "id", "swh": "sw", "kor": "ko", "jpn": "ja", "cmn": "zh", "fas": "fa",
}  # fmt: skip


class TextFrontend(Protocol):
    """Turns text into token-id sequences, one per segment (sentence), for one model."""

    languages: tuple[str, ...]
    voices: tuple[str, ...]
    speaker_ids: tuple[int, ...]

    def encode(self, text: str) -> list[npt.NDArray[np.int64]]:
        """Token ids per segment; raises ``InvalidTextError`` when nothing can be spoken."""
        ...

    def align(self, text: str, segments: Sequence[npt.NDArray[np.int64]]) -> list[tuple[WordSpan, ...]]:
        """The words of ``text`` and the tokens of ``segments`` (its ``encode``) that say them, per segment."""
        ...


#: Words said alone, remembered per frontend (a voice agent's vocabulary repeats).
_WORD_CACHE = 8192


def _languages(declared: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for code in declared:
        for variant in (code, _ISO3_TO_ISO1.get(code, code)):
            if variant and variant not in out:
                out.append(variant)
    return tuple(out)


class MmsFrontend:
    """``VitsTokenizer`` (MMS-TTS): normalised characters interleaved with blanks; one segment."""

    def __init__(self, tokenizer: Any, languages: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.languages = _languages(languages)
        self.voices: tuple[str, ...] = ()
        self.speaker_ids: tuple[int, ...] = ()
        vocab = tokenizer.get_vocab()
        self._vocab = set(vocab)
        # Ids that carry no sound of their own: blanks/padding, unknown and the word separator.
        self._silent = {i for tok, i in vocab.items() if tok in {tokenizer.pad_token, tokenizer.unk_token, " ", "|"}}
        self._lock = threading.Lock()  # tokenizers keep per-call state; prepare may run on several threads
        self._blanks = {i for tok, i in vocab.items() if tok == tokenizer.pad_token}
        self._breaks = {i for tok, i in vocab.items() if tok in {" ", "|"}}
        self._expected = functools.lru_cache(maxsize=_WORD_CACHE)(self._word_ids)

    def normalize(self, text: str) -> str:
        """Numbers, currency, dates, symbols and abbreviations spelled out (the vocabulary has only letters)."""
        return normalize(text, self.languages[0] if self.languages else "en")

    def unsayable(self, text: str) -> str:
        """Characters of ``text`` the tokenizer will drop after normalisation (punctuation aside), each once."""
        if getattr(self.tokenizer, "is_uroman", False):
            return ""  # romanised before tokenising: every script maps onto the vocabulary
        prepared = self.normalize(text)
        with self._lock:
            # The tokenizer's own lowercasing and per-language character fixes; it then drops the rest.
            if getattr(self.tokenizer, "normalize", False):
                prepared = self.tokenizer.normalize_text(prepared)
            prepared = self.tokenizer._preprocess_char(prepared)
        vocab = self._vocab
        # Punctuation only shapes prosody, and MMS vocabularies have none: its absence is not worth reporting.
        return "".join(
            dict.fromkeys(
                ch for ch in prepared if ch not in vocab and not ch.isspace() and unicodedata.category(ch)[0] != "P"
            )
        )

    def encode(self, text: str) -> list[npt.NDArray[np.int64]]:
        """The whole text as one segment of character ids."""
        text = self.normalize(text)
        with self._lock:
            ids = self.tokenizer(text)["input_ids"]
        if not any(i not in self._silent for i in ids):
            raise InvalidTextError
        return [np.asarray(ids, dtype=np.int64)]

    def align(self, text: str, segments: Sequence[npt.NDArray[np.int64]]) -> list[tuple[WordSpan, ...]]:
        """The words of ``text`` and their characters' tokens (``inference.backends.align``)."""
        words = text.split()
        expected = [self._expected(w) for w in words]
        return align_words(words, expected, segments, self._silent, self._blanks, self._breaks)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """The sounding character ids of ``word`` normalised alone ("42" → "forty two"), ``BREAK`` between
        the words it becomes."""
        normalized = self.normalize(word)
        with self._lock:
            ids = self.tokenizer(normalized)["input_ids"]
        return _sounds(ids, self._silent, self._breaks)


class PiperFrontend:
    """espeak-ng phonemes → ids exactly as Piper builds them: ``^ _ p1 _ p2 _ … pn _ $`` per sentence."""

    def __init__(self, config: dict[str, Any], source: str = PIPER_CONFIG_NAME) -> None:
        try:
            self.espeak_voice = str(config["espeak"]["voice"])
            self.id_map: dict[str, list[int]] = {k: [int(i) for i in v] for k, v in config["phoneme_id_map"].items()}
            self._bos, self._pad, self._eos = self.id_map["^"], self.id_map["_"], self.id_map["$"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: not a usable Piper voice config ({exc!r} missing or malformed)") from exc
        if config.get("phoneme_type", "espeak") != "espeak":
            raise ModelLoadError(
                f"{source}: phoneme_type {config.get('phoneme_type')!r} is not supported (espeak only)"
            )
        self._phonemizer = EspeakPhonemizer(self.espeak_voice, config.get("vowel_clusters"))
        language = config.get("language") or {}
        declared = [str(language.get("family") or self.espeak_voice.split("-")[0])]
        if language.get("code"):
            declared.append(str(language["code"]))
        self.languages = _languages(declared)
        speaker_map: dict[str, int] = {str(k): int(v) for k, v in (config.get("speaker_id_map") or {}).items()}
        self.voices = tuple(speaker_map)
        self.speaker_ids = tuple(speaker_map.values())
        # Ids that are not sounds (pauses and punctuation still shape prosody, but alone they say nothing).
        self._silent = {i for sym, ids in self.id_map.items() for i in ids if not any(ch.isalpha() for ch in sym)}
        self._breaks = set(self.id_map.get(" ", ()))
        self._blanks = set(self._pad)
        # Word timing matches sounds only: stress moves between a word said alone and in a sentence.
        self._soundless = self._silent | {i for mark in "ˈˌ" for i in self.id_map.get(mark, ())}
        self._expected = functools.lru_cache(maxsize=_WORD_CACHE)(self._word_ids)

    def phonemize(self, text: str) -> list[list[str]]:
        """espeak-ng phonemes (NFD code points), grouped by sentence, punctuation kept."""
        return self._phonemizer.phonemize(text)

    def encode(self, text: str) -> list[npt.NDArray[np.int64]]:
        """One id sequence per sentence that has anything to say."""
        segments: list[npt.NDArray[np.int64]] = []
        for sentence in self.phonemize(unicodedata.normalize("NFC", text)):
            ids = list(self._bos) + list(self._pad)
            for phoneme in sentence:
                mapped = self.id_map.get(phoneme)
                if mapped is None:
                    continue  # Piper drops phonemes its voice has no id for, and so do we
                ids.extend(mapped)
                ids.extend(self._pad)
            ids.extend(self._eos)
            if any(i not in self._silent for i in ids):
                segments.append(np.asarray(ids, dtype=np.int64))
        if not segments:
            raise InvalidTextError
        return segments

    def align(self, text: str, segments: Sequence[npt.NDArray[np.int64]]) -> list[tuple[WordSpan, ...]]:
        """The words of ``text`` and their phonemes' tokens (``inference.backends.align``): espeak-ng joins
        and splits words ("of the" → "ʌvðə", "$3" → "three dollars"), so each word is said alone first."""
        words = unicodedata.normalize("NFC", text).split()
        expected = [self._expected(w) for w in words]
        return align_words(words, expected, segments, self._soundless, self._blanks, self._breaks)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """The sounding phoneme ids of ``word`` said alone, ``BREAK`` between the words it becomes."""
        ids = [i for sentence in self.phonemize(word) for phoneme in sentence for i in self.id_map.get(phoneme, ())]
        return _sounds(ids, self._soundless, self._breaks)


def _sounds(ids: Sequence[int], silent: set[int], breaks: set[int]) -> tuple[int, ...]:
    """The sounding ids of a word said alone, one ``BREAK`` between the words it became (none at the ends)."""
    out: list[int] = []
    for i in ids:
        if i in breaks:
            if out and out[-1] != BREAK:
                out.append(BREAK)
        elif i not in silent:
            out.append(i)
    while out and out[-1] == BREAK:
        out.pop()
    return tuple(out)


def load_frontend(source: Path | str, config: Any, languages: Sequence[str] | None = None) -> TextFrontend:
    """The frontend that matches a checkpoint: Piper phonemes if it carries ``piper.json``, else MMS."""
    if isinstance(source, Path) and (source / PIPER_CONFIG_NAME).is_file():
        path = source / PIPER_CONFIG_NAME
        try:
            piper_config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot read the Piper voice config: {exc}") from exc
        piper = PiperFrontend(piper_config, source=str(path))
        if languages:
            piper.languages = _languages(languages)
        return piper
    try:
        from transformers import VitsTokenizer

        tokenizer = VitsTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot load the VITS tokenizer from {source}: {exc}") from exc
    declared = list(languages) if languages else [str(getattr(tokenizer, "language", None) or "en")]
    return MmsFrontend(tokenizer, declared)
