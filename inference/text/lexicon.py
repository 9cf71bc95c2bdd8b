"""A pronunciation lexicon: words the voice should say differently (``nginx`` → "engine x").

Read from a JSON object (``{"nginx": "engine x", "SQL": "sequel"}``) or a W3C Pronunciation Lexicon
(PLS, ``.pls``/``.xml``: ``<lexeme><grapheme>W3C</grapheme><alias>World Wide Web Consortium</alias>``),
the format Amazon Polly takes. Lexemes given only as ``<phoneme>`` are refused: a voice's phoneme set is its
own, and an alias works for every model.

Matching is on whole words (not inside a longer word), longest entry first. An entry written all in lower
case matches any case (``nginx``, ``Nginx``, ``NGINX``); an entry with a capital matches exactly as
written (``US`` the country, not ``us``). Every entry is one alternative of a single regular expression
built as a trie, so a lexicon of thousands of words costs one pass over the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from xml.parsers import expat

__all__ = ["MAX_ENTRIES", "Lexicon", "LexiconError", "load_lexicon"]

MAX_ENTRIES = 20_000
_MAX_GRAPHEME, _MAX_ALIAS = 100, 500
_PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
_WORD = re.compile(r"\w")


class LexiconError(ValueError):
    """The lexicon cannot be used; the message names the file and the entry."""


class Lexicon:
    """Whole-word replacements, applied in one pass."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        if len(entries) > MAX_ENTRIES:
            raise LexiconError(f"{len(entries)} entries; at most {MAX_ENTRIES}")
        self._exact: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        for grapheme, alias in entries.items():
            word, said = grapheme.strip(), " ".join(alias.split())
            if not word or len(word) > _MAX_GRAPHEME:
                raise LexiconError(f"entry {grapheme!r}: a word of 1 to {_MAX_GRAPHEME} characters is needed")
            if len(said) > _MAX_ALIAS:
                raise LexiconError(f"entry {grapheme!r}: its alias is over {_MAX_ALIAS} characters")
            if word == word.lower():
                self._folded[word] = said
            else:
                self._exact[word] = said
        words = {w.lower() for w in (*self._exact, *self._folded)}
        self._pattern = re.compile(r"(?<!\w)" + _trie_pattern(words) + r"(?!\w)", re.IGNORECASE) if words else None

    def __len__(self) -> int:
        return len(self._exact) + len(self._folded)

    def apply(self, text: str) -> str:
        """``text`` with every listed word replaced by what it should be said as."""
        if self._pattern is None:
            return text
        out: list[str] = []
        pos = 0
        while (match := self._pattern.search(text, pos)) is not None:
            start, end = match.span()
            found = match.group(0)
            said = self._said(found)
            if said is None:
                # The pattern matches case-blind: this is a capitalised entry in another case ("Us" for "US").
                # A shorter entry may still start here ("a" in "a b" when "A B" is listed): the longest one
                # that ends at a word boundary wins; with none, the search goes on from the next character.
                for cut in range(len(found) - 1, 0, -1):
                    if not _WORD.match(found[cut]) and (said := self._said(found[:cut])) is not None:
                        end = start + cut
                        break
                else:
                    out.append(text[pos : start + 1])
                    pos = start + 1
                    continue
            out.append(text[pos:start])
            out.append(said)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _said(self, word: str) -> str | None:
        if word in self._exact:
            return self._exact[word]
        return self._folded.get(word.lower())


def _trie_pattern(words: set[str]) -> str:
    """One regular expression for all ``words`` with shared prefixes factored out (longest match first)."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here, and longer ones go on: try the longer first (greedy)
            return "(?:" + body + ")?"
        return body

    return emit(trie)


def load_lexicon(path: str | Path) -> Lexicon:
    """A lexicon from a JSON object or a PLS file; ``LexiconError`` names the problem."""
    source = Path(path)
    try:
        raw = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LexiconError(f"cannot read {source}: {exc}") from None
    try:
        if source.suffix.lower() == ".json":
            entries = json.loads(raw)
            if not isinstance(entries, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
            ):
                raise LexiconError('a JSON lexicon is one object of words and what to say: {"nginx": "engine x"}')
            return Lexicon(entries)
        return Lexicon(_pls_entries(raw))
    except json.JSONDecodeError as exc:
        raise LexiconError(f"{source} is not valid JSON: {exc}") from None
    except LexiconError as exc:
        raise LexiconError(f"{source}: {exc}") from None


def _pls_entries(document: str) -> dict[str, str]:
    """``grapheme → alias`` from a PLS document (each of a lexeme's graphemes gets its alias)."""
    entries: dict[str, str] = {}
    lexeme: dict[str, list[str]] | None = None
    field: str | None = None
    text: list[str] = []
    parser = expat.ParserCreate(namespace_separator=" ")

    def local(name: str) -> str:
        return name.split(" ")[-1]

    def refuse_doctype(*_: object) -> None:
        raise LexiconError("a DOCTYPE is not allowed in a lexicon")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal lexeme, field
        tag = local(name)
        if lexeme is None and tag == "lexeme":
            lexeme = {"grapheme": [], "alias": [], "phoneme": []}
        elif lexeme is not None and tag in lexeme:
            field = tag
            text.clear()

    def end(name: str) -> None:
        nonlocal lexeme, field
        tag = local(name)
        if lexeme is not None and field == tag:
            lexeme[tag].append("".join(text).strip())
            field = None
        elif lexeme is not None and tag == "lexeme":
            graphemes = [g for g in lexeme["grapheme"] if g]
            aliases = [a for a in lexeme["alias"] if a]
            if not aliases:
                shown = graphemes[0] if graphemes else "?"
                reason = "only <phoneme>, which is not supported" if lexeme["phoneme"] else "no <alias>"
                raise LexiconError(f"lexeme {shown!r} has {reason}: give an <alias> (what to say instead)")
            for grapheme in graphemes:
                entries[grapheme] = aliases[0]
            lexeme = None

    def data(chunk: str) -> None:
        if field is not None:
            text.append(chunk)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(document, True)
    except expat.ExpatError as exc:
        raise LexiconError(f"not a well-formed lexicon (PLS XML or a .json object): {exc}") from None
    if not entries:
        raise LexiconError(f"no <lexeme> with a <grapheme> and an <alias> (PLS namespace {_PLS_NAMESPACE})")
    return entries
