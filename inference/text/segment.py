"""Long text → sentence-sized chunks, each one batch job.

Sentences come from ``sentencex`` (abbreviations such as "Dr." and "e.g.", decimals, quotes, ellipses and
paragraph breaks, for some 300 languages). A sentence longer than the chunk limit is cut at clause
punctuation, then at spaces, and only as a last resort inside a word.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_CHUNK_CHARS", "MIN_CLAUSE_CHARS", "SentenceBuffer", "split_sentences"]

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


#: A word followed by a space: once the text after a sentence holds one, the sentence's end is settled.
_WORD_ENDED = re.compile(r"\S\s")


#: How a sentence ends: a full stop, question or exclamation mark or ellipsis (Latin, CJK, Arabic,
#: Devanagari), then perhaps closing quotes or brackets.
_STOP_AT_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f\u061f\u0964][\"'\u201d\u2019)\]]*\s*$")
#: The shortest clause ``take_clause`` hands out: a word or two alone ("So, ") sounds clipped.
MIN_CLAUSE_CHARS = 12
#: Markup that must not be cut open: brackets (Markdown links, SSML tags), code spans and emphasis.
_PAIRS = (("[", "]"), ("(", ")"), ("<", ">"))


def _balanced(text: str) -> bool:
    """Whether ``text`` closes every bracket, code span and emphasis it opens (so does the rest)."""
    paired = all(text.count(a) == text.count(b) for a, b in _PAIRS)
    strong = text.count("**")
    return paired and not text.count("`") % 2 and not strong % 2 and not (text.count("*") - 2 * strong) % 2


def _settled(after: str) -> bool:
    """Whether the text after a sentence end confirms it: a word has ended there, or it is only blank text
    with a line break (the segmenter makes a blank line a segment of its own)."""
    return bool(_WORD_ENDED.search(after)) or (not after.strip() and "\n" in after)


class SentenceBuffer:
    """Text that arrives in pieces (a language model's tokens), handed out one complete sentence at a time.

    A sentence is complete once a word of the text after it has ended (or a blank line follows):
    before that the segmenter cannot tell "Dr. " or "$3." from a sentence's end, nor whether a quote
    mark after a full stop closes that sentence or opens the next. So the sentences come out as the
    whole text's would; the last, possibly unfinished, one waits for more text or ``flush``.
    """

    def __init__(self, language: str = "en", max_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> None:
        self.language = language
        #: A run this long with no sentence end is handed out anyway, cut at a clause or a space (so text
        #: without punctuation still flows, and each piece costs the segmenter a bounded amount of work).
        self.max_chars = max(1, max_chars)
        self._text = ""

    @property
    def pending(self) -> str:
        """The text not handed out yet."""
        return self._text

    def add(self, piece: str) -> list[str]:
        """Take ``piece``; return the sentences it completed, as sent (whitespace and all), in order."""
        self._text += piece
        if not self._text.strip():
            return []
        parts = _segment(self._text, self.language)
        if "".join(parts) != self._text:  # never seen; then nothing is cut rather than something lost
            return []
        cut = len(parts) - 1
        while cut > 0 and not _settled("".join(parts[cut:])):
            cut -= 1
        done = parts[:cut]
        self._text = "".join(parts[cut:])
        while len(self._text) > self.max_chars:
            head = self._text[: self.max_chars]
            breaks = [m.end() for m in _CLAUSE_BREAK.finditer(head)] or [m.end() for m in _SPACE.finditer(head)]
            cut = breaks[-1] if breaks and breaks[-1] < len(head) else self.max_chars
            done.append(self._text[:cut])
            self._text = self._text[cut:]
        return [part for part in done if part.strip()]

    @property
    def ends_with_a_stop(self) -> bool:
        """Whether the waiting text ends as a sentence does ("Thanks for calling."), with nothing after it
        yet to settle it: a sentence unless more text follows ("Dr." or "$3." would go on)."""
        return bool(self._text.strip()) and _STOP_AT_END.search(self._text) is not None

    def take_clause(self, min_chars: int = MIN_CLAUSE_CHARS) -> str:
        """The waiting text up to its last settled clause break (a comma, semicolon, colon or dash that a
        word after it confirms), taken out of the buffer; "" when there is none.

        For a listener about to run out of audio: part of a sentence now is worth more than all of it later.
        A clause shorter than ``min_chars`` or one that would cut a bracket, code span or emphasis open is
        not taken.
        """
        cut = 0
        for match in _CLAUSE_BREAK.finditer(self._text):
            head = self._text[: match.end()]
            if not _settled(self._text[match.end() :]):
                break  # the breaks after this one are not settled either
            if len(head.strip()) >= min_chars and _balanced(head):
                cut = match.end()
        head, self._text = self._text[:cut], self._text[cut:]
        return head

    def flush(self) -> str:
        """Everything still waiting, as one piece (empty when there is nothing to say)."""
        text, self._text = self._text, ""
        return text if text.strip() else ""

    def clear(self) -> None:
        """Forget what is waiting."""
        self._text = ""
