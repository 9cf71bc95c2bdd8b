"""Markdown, as language models write it, turned into the text a person reading it aloud would say.

A voice reading an LLM's answer should not say "asterisk asterisk" around a bold word, "hash" before a
heading, or the address behind a link. This keeps the words and drops the markup:

* emphasis and strikethrough (``**bold**``, ``*italic*``, ``_italic_``, ``~~gone~~``) keep their words;
  a lone ``*`` or ``_`` (``5 * 3``, ``snake_case``) is left alone;
* ``[text](url)`` says the text, ``![alt](url)`` the alt text, `` `code` `` the code;
* headings, list items and table rows lose their markers and end as sentences of their own (a full stop
  is added where one ends without punctuation, so each is said with a pause); quoted lines lose ``>``;
* emoji are left out (espeak-ng would say "party popper");
* fenced code keeps its lines, without the fences; horizontal rules and table separator rows vanish;
* a blank line ends a paragraph; a single line break inside one is a space.

Every pattern is bounded (no nested quantifiers, spans of at most a few hundred characters), so hostile
input costs linear time.
"""

from __future__ import annotations

import re

__all__ = ["speakable_markdown"]

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}(?:\s+|$)")
_BULLET = re.compile(r"^\s*[-*+]\s+(?:\[[ xX]\]\s+)?")
_NUMBERED = re.compile(r"^\s*\d{1,3}[.)]\s+")
_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")

_IMAGE = re.compile(r"!\[([^\]\n]{0,500})\]\([^)\n]{0,2000}\)")
_LINK = re.compile(r"\[([^\]\n]{1,500})\]\([^)\n]{0,2000}\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]{1,2000})>")
_CODE = re.compile(r"`{1,3}([^`\n]{1,500})`{1,3}")
_STRONG = re.compile(r"(\*\*|__)(?=\S)([^\n]{1,500}?)(?<=\S)\1")
_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]{1,500}?)(?<=[^\s*])\*(?![\w*])")
_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])([^_\n]{1,500}?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)([^~\n]{1,500}?)(?<=\S)~~")
_SPACES = re.compile(r"[ \t]{2,}")
# Emoji and pictographs, with what joins and styles them (variation selectors, skin tones, ZWJ between two
# of them, keycap marks; a keycap's digit stays): a person reading aloud skips them, espeak-ng says their
# names ("party popper"). Ranges, since ``re`` has no \p{Extended_Pictographic}.
_PICTOGRAPH = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff"
_STYLE = "\ufe0e\ufe0f\U0001f3fb-\U0001f3ff"
_ONE_EMOJI = f"[{_PICTOGRAPH}][{_STYLE}]*(?:\u200d[{_PICTOGRAPH}][{_STYLE}]*)*|[\ufe0f\u20e3]"
_EMOJI = re.compile(f"(?:{_ONE_EMOJI})(?:[ \t]*(?:{_ONE_EMOJI}))*[ \t]*")
_ENDS_SENTENCE = (".", "!", "?", "…", ":", ";", ",")


def _without_emoji(line: str) -> str:
    """Every run of emoji goes, with the spaces around it; a space stays only where it separated two words.
    (Built by hand rather than with a pattern that starts with spaces, which would be quadratic on long runs
    of them.)"""
    out: list[str] = []
    pos = 0
    for match in _EMOJI.finditer(line):
        before, end = line[pos : match.start()], match.end()
        if end == len(line) or line[end] in ",.;:!?)":
            before, gap = before.rstrip(" \t"), ""
        elif not before or before.endswith((" ", "\t", "(")):
            gap = ""
        else:
            gap = " "
        out.append(before + gap)
        pos = end
    out.append(line[pos:])
    return "".join(out)


def _inline(line: str) -> str:
    # Each pattern runs only when a character it cannot match without is there: most lines are plain
    # prose, and nine regex passes over them cost the event loop ~30 µs a sentence for nothing.
    if not line.isascii():  # every emoji, and what styles them, is outside ASCII
        line = _without_emoji(line)
    if "[" in line:
        line = _IMAGE.sub(r"\1", line)
        line = _LINK.sub(r"\1", line)
    if "<" in line:
        line = _AUTOLINK.sub(r"\1", line)
    if "`" in line:
        line = _CODE.sub(r"\1", line)
    if "*" in line or "_" in line:
        line = _STRONG.sub(r"\2", line)
        line = _STAR.sub(r"\1", line)
        line = _UNDERSCORE.sub(r"\1", line)
    if "~" in line:
        line = _STRIKE.sub(r"\1", line)
    if "  " in line or "\t" in line:
        line = _SPACES.sub(" ", line)
    return line.strip()


def _sentence(text: str) -> str:
    """``text`` ending in punctuation, so that the sentence splitter (and the voice) pauses after it."""
    text = text.strip()
    if not text or text.endswith(_ENDS_SENTENCE) or not any(ch.isalnum() for ch in text[-3:]):
        return text
    return text + "."


def speakable_markdown(text: str) -> str:
    """The words of ``text`` without its Markdown, one paragraph or block per line (see the module docs)."""
    blocks: list[str] = []
    paragraph: list[str] = []

    def end_paragraph() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    in_fence = False
    for raw in text.splitlines():
        if _FENCE.match(raw):
            end_paragraph()
            in_fence = not in_fence
            continue
        line = raw.strip()
        if in_fence:
            if line:
                blocks.append(line)
            continue
        if not line or _RULE.match(line) or _TABLE_SEPARATOR.match(line):
            end_paragraph()
            continue
        if line.startswith("|") or line.endswith("|"):
            end_paragraph()
            cells = [_inline(cell) for cell in line.strip("|").split("|")]
            blocks.append(", ".join(cell for cell in cells if cell))
            continue
        if _HEADING.match(line) or _BULLET.match(line) or _NUMBERED.match(line):
            end_paragraph()  # a numbered item keeps its number: "1. First." is how it is read out
            line = _BULLET.sub("", _HEADING.sub("", line, count=1), count=1)
            blocks.append(_inline(line))
            continue
        line = _QUOTE.sub("", line, count=1)
        if line:
            paragraph.append(_inline(line))
    end_paragraph()
    kept = [block for block in blocks if block]
    # Every block but the last ends as a sentence; the last is left as written, so plain text without
    # any Markdown comes back unchanged.
    return "\n".join([*(_sentence(block) for block in kept[:-1]), *kept[-1:]])
