"""Long text → sentence-sized chunks, each one batch job.

Sentences come from ``sentencex`` (abbreviations such as "Dr." and "e.g.", decimals, quotes, ellipses and
paragraph breaks, for some 300 languages). A sentence longer than the chunk limit is cut at clause
punctuation, then at spaces, and only as a last resort inside a word.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_CHUNK_CHARS", "split_sentences"]

DEFAULT_MAX_CHUNK_CHARS = 400

_CLAUSE_BREAK = re.compile(r"(?<=[,;:\u2014\u2013\u3001\uff0c\uff1b])\s+|\s+(?=[\u2014\u2013]\s)")
_SPACE = re.compile(r"\s+")


def _segment(text: str, language: str) -> list[str]:
    from sentencex import segment

    code = language.lower().replace("_", "-").split("-")[0] or "en"
    try:
        return list(segment(code, text))
    except Exception:  # sentencex falls back per language; anything odd still gets English rules
        return list(segment("en", text))


def _pack(pieces: list[str], limit: int, separator: str) -> list[str]:
    """Greedily join neighbouring pieces while they fit under the limit."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
        else:
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _cut_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    out: list[str] = []
    for clause in _pack(_CLAUSE_BREAK.split(sentence), limit, " "):
        if len(clause) <= limit:
            out.append(clause)
            continue
        for words in _pack(_SPACE.split(clause), limit, " "):
            # A run with no space at all (a URL, a 100 000-character "word"): cut it where it must be.
            out.extend(words[i : i + limit] for i in range(0, len(words), limit))
    return out


def split_sentences(text: str, language: str = "en", max_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> list[str]:
    """Sentences of ``text`` in order, none longer than ``max_chars``, blank ones dropped."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    chunks: list[str] = []
    for sentence in _segment(text, language):
        cleaned = _SPACE.sub(" ", sentence).strip()
        if cleaned:
            chunks.extend(piece for piece in _cut_long(cleaned, max_chars) if piece.strip())
    return chunks
