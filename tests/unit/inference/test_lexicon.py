"""The pronunciation lexicon (inference.text.lexicon): JSON and PLS files, whole words, case rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.text.lexicon import MAX_ENTRIES, Lexicon, LexiconError, load_lexicon

PLS = """<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>W3C</grapheme><alias>World Wide Web Consortium</alias></lexeme>
  <lexeme><grapheme>nginx</grapheme><grapheme>NGINX</grapheme><alias>engine x</alias></lexeme>
</lexicon>"""


def test_whole_words_longest_first_and_the_case_rule() -> None:
    lexicon = Lexicon({"nginx": "engine x", "SQL": "sequel", "US": "United States", "new york": "the big apple",
                       "new": "brand new", "C++": "C plus plus"})  # fmt: skip
    said = lexicon.apply("nginx, Nginx and NGINX behind nginxes; SQL not sql; the US and us; in New York, new yorkers")
    assert said == (
        "engine x, engine x and engine x behind nginxes; sequel not sql; the United States and us; "
        "in the big apple, brand new yorkers"
    )
    assert lexicon.apply("I like C++.") == "I like C plus plus."
    assert len(lexicon) == 6
    # A capitalised entry seen in another case does not hide a shorter entry starting at the same word.
    assert Lexicon({"A B": "X", "a": "Y", "b": "Z"}).apply("a b, A B") == "Y Z, X"


def test_json_and_pls_files(tmp_path: Path) -> None:
    as_json = tmp_path / "words.json"
    as_json.write_text(json.dumps({"nginx": "engine x"}), encoding="utf-8")
    assert load_lexicon(as_json).apply("Run nginx.") == "Run engine x."
    as_pls = tmp_path / "words.pls"
    as_pls.write_text(PLS, encoding="utf-8")
    lexicon = load_lexicon(as_pls)
    assert lexicon.apply("The W3C runs NGINX and nginx.") == "The World Wide Web Consortium runs engine x and engine x."


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", "[1]", "one object of words and what to say"),
        ("a.json", '{"x": 1}', "one object of words and what to say"),
        ("a.json", "{", "is not valid JSON"),
        ("a.json", json.dumps({" ": "blank"}), "a word of 1 to 100 characters"),
        ("a.json", json.dumps({"x": "y" * 501}), "alias is over 500 characters"),
        ("a.pls", "<lexicon><lexeme><grapheme>x</grapheme><phoneme>ks</phoneme></lexeme></lexicon>",
         "has only <phoneme>, which is not supported"),
        ("a.pls", "<lexicon><lexeme><grapheme>x</grapheme></lexicon>", "not a well-formed lexicon"),
        ("a.pls", "<lexicon/>", "no <lexeme> with a <grapheme> and an <alias>"),
        ("a.pls", '<!DOCTYPE l [<!ENTITY a "b">]><lexicon/>', "a DOCTYPE is not allowed"),
    ],
)  # fmt: skip
def test_an_unusable_lexicon_names_the_file_and_the_problem(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LexiconError, match=re.escape(str(path))) as refused:
        load_lexicon(path)
    assert message in str(refused.value)
    with pytest.raises(LexiconError, match="cannot read"):
        load_lexicon(tmp_path / "missing.json")
    with pytest.raises(LexiconError, match=f"at most {MAX_ENTRIES}"):
        Lexicon({f"w{i}": "x" for i in range(MAX_ENTRIES + 1)})


words = st.text(alphabet="abcAB +", min_size=1, max_size=6).filter(lambda w: w.strip() == w and w.strip())


@settings(max_examples=300)
@given(st.dictionaries(words, st.just("X"), min_size=1, max_size=12), st.lists(words, max_size=8))
def test_the_trie_pattern_finds_exactly_the_listed_words(entries: dict[str, str], others: list[str]) -> None:
    """Against a plain reference: longest listed word at each position, whole words only."""
    lexicon = Lexicon(entries)
    text = " ; ".join([*entries, *others])

    def reference(text: str) -> str:
        keys = sorted(entries, key=len, reverse=True)
        out, i = [], 0
        while i < len(text):
            hit = None
            if i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"):
                for key in keys:
                    end = i + len(key)
                    candidate = text[i:end]
                    exact = key != key.lower()
                    if (candidate == key if exact else candidate.lower() == key) and (
                        end == len(text) or not (text[end].isalnum() or text[end] == "_")
                    ):
                        hit = key
                        break
            if hit is None:
                out.append(text[i])
                i += 1
            else:
                out.append("X")
                i += len(hit)
        return "".join(out)

    assert lexicon.apply(text) == reference(text)
