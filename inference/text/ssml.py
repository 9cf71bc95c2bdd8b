"""A subset of SSML (W3C Speech Synthesis Markup Language 1.1), as Amazon Polly and Google Cloud TTS take it.

Honoured: ``<speak>`` (the root), ``<break time="500ms">`` / ``strength=...`` (silence, at most 10 s each
and 300 s in all),
``<p>`` and ``<s>`` (sentence boundaries), ``<prosody rate="slow">`` (keywords, ``80%``, ``+10%``, ``1.2``;
nested rates multiply, and multiply the request's ``speed``), ``<say-as interpret-as="characters">``
(spelled out letter by letter), ``<sub alias="...">`` (the alias is said).

Read for their text only, and reported by name so a caller knows (``SsmlText.ignored``): every other
element (``<emphasis>``, ``<voice>``, ``<lang>``, ``<phoneme>``, ``<audio>`` whose content is its fallback,
``<mark>``, vendor elements) and ``<prosody>``'s ``pitch`` and ``volume``; VITS has no control for them.

Parsing is expat's, with every DOCTYPE refused (no entity declarations, so no entity expansion) and nothing
external ever loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.parsers import expat

__all__ = ["MAX_BREAK_S", "MAX_SILENCE_S", "Segment", "SsmlError", "SsmlText", "looks_like_ssml", "parse_ssml"]

MAX_BREAK_S = 10.0
#: All the silence one document may ask for: breaks are free to ask for and cost memory to make.
MAX_SILENCE_S = 300.0
_STRENGTH_S = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.25}
_RATE_WORDS = {"x-slow": 0.5, "slow": 0.64, "medium": 1.0, "default": 1.0, "fast": 1.55, "x-fast": 2.0}
_TIME = re.compile(r"^\s*(\d{1,6}(?:\.\d{1,6})?)\s*(ms|s)\s*$")
_RATE = re.compile(r"^\s*([+-]?)(\d{1,4}(?:\.\d{1,6})?)\s*(%?)\s*$")
_SPACES = re.compile(r"\s+")
_SPELLED = {"characters", "spell-out", "verbatim", "letters"}


class SsmlError(ValueError):
    """The SSML is malformed or asks for something impossible; the message says where and what."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of text said at one rate, with the silence a ``<break>`` put before or after it."""

    text: str
    rate: float = 1.0
    pause_before_s: float = 0.0
    pause_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SsmlText:
    """A parsed SSML document: what to say, in order, and which elements were read for their text only."""

    segments: tuple[Segment, ...]
    ignored: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """Everything said, as plain text (for length and sayability checks)."""
        return "\n".join(segment.text for segment in self.segments)


def looks_like_ssml(text: str) -> bool:
    """Whether ``text`` is an SSML document (its root element is ``<speak>``), possibly after an XML declaration."""
    head = text.lstrip()
    if head.startswith("<?xml"):
        head = head[head.find("?>") + 2 :].lstrip() if "?>" in head else ""
    return head.startswith("<speak") and (len(head) == 6 or not (head[6].isalnum() or head[6] in "-_:"))


@dataclass
class _Builder:
    segments: list[Segment] = field(default_factory=list)
    ignored: dict[str, None] = field(default_factory=dict)
    buffer: list[str] = field(default_factory=list)
    rates: list[float] = field(default_factory=lambda: [1.0])
    #: Per open element: (name, rate pushed?, say-as start in buffer or None, skip text?).
    stack: list[tuple[str, bool, int | None, bool]] = field(default_factory=list)
    pause_before: float = 0.0
    skipping: int = 0

    def flush(self) -> None:
        text = _SPACES.sub(" ", "".join(self.buffer)).strip()
        self.buffer.clear()
        if text:
            self.segments.append(Segment(text, rate=self.rates[-1], pause_before_s=self.pause_before))
            self.pause_before = 0.0

    def pause(self, seconds: float) -> None:
        self.flush()
        if self.segments:
            last = self.segments[-1]
            total = min(MAX_BREAK_S, last.pause_after_s + seconds)
            self.segments[-1] = Segment(last.text, last.rate, last.pause_before_s, total)
        else:
            self.pause_before = min(MAX_BREAK_S, self.pause_before + seconds)

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if not self.stack and name != "speak":
            raise SsmlError(f"the root element must be <speak>, not <{name}>")
        pushed_rate, spell_from, skip = False, None, False
        if name in ("p", "s"):
            self.flush()
        elif name == "break":
            self.pause(_break_seconds(attrs))
        elif name == "prosody":
            for other in sorted(set(attrs) - {"rate"}):
                self.ignored[f"prosody {other}"] = None
            if "rate" in attrs:
                self.flush()
                self.rates.append(self.rates[-1] * _rate(attrs["rate"]))
                pushed_rate = True
        elif name == "say-as":
            if attrs.get("interpret-as", "") in _SPELLED:
                spell_from = len(self.buffer)
        elif name == "sub":
            if "alias" not in attrs:
                raise SsmlError('<sub> needs an alias="..." attribute: what to say instead of its text')
            self.buffer.append(f" {attrs['alias']} ")
            skip = True
            self.skipping += 1
        elif name != "speak":
            self.ignored[name] = None
        self.stack.append((name, pushed_rate, spell_from, skip))

    def end(self, name: str) -> None:
        _, pushed_rate, spell_from, skip = self.stack.pop()
        if skip:
            self.skipping -= 1
        if spell_from is not None:
            word = "".join(self.buffer[spell_from:])
            del self.buffer[spell_from:]
            self.buffer.append(" " + " ".join(ch for ch in word if not ch.isspace()) + " ")
        if name in ("p", "s") or pushed_rate:
            self.flush()
        if pushed_rate:
            self.rates.pop()

    def text(self, data: str) -> None:
        if not self.skipping:
            self.buffer.append(data)


def parse_ssml(document: str) -> SsmlText:
    """Parse an SSML document into segments; ``SsmlError`` names what is wrong and where."""
    builder = _Builder()
    parser = expat.ParserCreate()

    def refuse_doctype(*_: object) -> None:
        raise SsmlError("a DOCTYPE is not allowed in SSML here")

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise SsmlError(f"the SSML is not well-formed: {exc}") from None
    builder.flush()
    silence = builder.pause_before + sum(s.pause_before_s + s.pause_after_s for s in builder.segments)
    if silence > MAX_SILENCE_S:
        raise SsmlError(f"the SSML asks for {silence:.0f} s of silence in all; at most {MAX_SILENCE_S:.0f} s")
    return SsmlText(tuple(builder.segments), tuple(builder.ignored))


def _break_seconds(attrs: dict[str, str]) -> float:
    if "time" in attrs:
        match = _TIME.match(attrs["time"])
        if not match:
            raise SsmlError(f'<break time="{attrs["time"]}">: give seconds or milliseconds, e.g. "500ms" or "1.5s"')
        value = float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)
        return min(value, MAX_BREAK_S)
    strength = attrs.get("strength", "medium")
    if strength not in _STRENGTH_S:
        raise SsmlError(f'<break strength="{strength}">: use one of {", ".join(_STRENGTH_S)}')
    return _STRENGTH_S[strength]


def _rate(value: str) -> float:
    """``<prosody rate>`` as a multiplier: a keyword, ``80%`` (of the normal rate), ``+10%``/``-10%``
    (relative), or a bare number (``1.2``)."""
    if value in _RATE_WORDS:
        return _RATE_WORDS[value]
    match = _RATE.match(value)
    if match:
        sign, number, percent = match.group(1), float(match.group(2)), match.group(3)
        if sign:
            factor = 1.0 + (number if sign == "+" else -number) / (100.0 if percent else 1.0)
        else:
            factor = number / 100.0 if percent else number
        if factor > 0:
            return factor
    words = ", ".join(_RATE_WORDS)
    raise SsmlError(f'<prosody rate="{value}">: use {words}, a percentage ("80%", "+10%") or a number ("1.2")')
