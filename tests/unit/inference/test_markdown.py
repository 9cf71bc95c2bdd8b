"""Markdown read as a person reads it aloud (inference.text.markdown)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.text import speakable_markdown


@pytest.mark.parametrize(
    ("markdown", "said"),
    [
        ("I *really* mean it!", "I really mean it!"),
        ("**Bold**, _italic_, __strong__, ***both*** and ~~gone~~", "Bold, italic, strong, both and gone"),
        ("See [the docs](https://example.com/docs) or ![a cat](cat.png).", "See the docs or a cat."),
        (
            "Open <https://example.com> and run `pip install chorus`.",
            "Open https://example.com and run pip install chorus.",
        ),
        ("# Title\nSome text\nthat goes on.\n\n## Next", "Title.\nSome text that goes on.\nNext"),
        ("- apples\n- pears\n* [x] done\n+ plums", "apples.\npears.\ndone.\nplums"),
        ("1. First\n2) Second", "1. First.\n2) Second"),
        ("| Name | Age |\n|---|---:|\n| Bob | 42 |", "Name, Age.\nBob, 42"),
        ("> quoted\n> on\n\n---\n\n```python\nprint('hi')\n```\nDone", "quoted on.\nprint('hi').\nDone"),
        ("One paragraph\n\nand another", "One paragraph.\nand another"),
        ("Great job! 🎉 See you 👋🏽, I love it ❤️", "Great job! See you, I love it"),
        ("Family 👩\u200d👩\u200d👧 here, press 1️⃣, ☃ ⭐ 🇫🇷", "Family here, press 1,"),
    ],
)
def test_markup_goes_and_the_words_stay(markdown: str, said: str) -> None:
    assert speakable_markdown(markdown) == said


@pytest.mark.parametrize(
    "plain",
    [
        "Hello world",
        "5 * 3 = 15, a_b_c and 2*3*4 stay as written",
        "snake_case_name, a__b and x_1 but # is not a heading here",
        "Dr. Smith paid $3.50 at 10:30 on 2024-05-01.",
        "**unclosed bold and a *stray star",
    ],
)
def test_text_without_markdown_comes_back_unchanged(plain: str) -> None:
    assert speakable_markdown(plain) == plain


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_any_text_is_taken(text: str) -> None:
    out = speakable_markdown(text)
    assert isinstance(out, str)
    assert len(out) <= len(text) + text.count("\n") + 1  # at most a full stop added per line


def test_hostile_markup_is_handled_in_one_pass() -> None:
    # Unclosed openers by the ten thousand: bounded patterns make this linear (it would hang otherwise).
    for hostile in (
        "**a" * 30_000,
        "*a " * 30_000,
        "[" * 50_000 + "](" * 20_000,
        "_a" * 50_000,
        "`" * 100_000,
        "a" + " " * 50_000 + "x",
        "a 🎉" * 30_000,
    ):
        assert isinstance(speakable_markdown(hostile), str)


def _inline_every_pass(line: str) -> str:
    """``_inline`` without its shortcuts: every pattern over every line (what the shortcuts must agree with)."""
    from inference.text import markdown as md

    line = md._without_emoji(line)
    for pattern, group in (
        (md._IMAGE, r"\1"), (md._LINK, r"\1"), (md._AUTOLINK, r"\1"), (md._CODE, r"\1"), (md._STRONG, r"\2"),
        (md._STAR, r"\1"), (md._UNDERSCORE, r"\1"), (md._STRIKE, r"\1"),
    ):  # fmt: skip
        line = pattern.sub(group, line)
    return md._SPACES.sub(" ", line).strip()


_MARKUP = st.sampled_from([
    "*", "**", "_", "__", "~~", "`", "[", "](", ")", "![", "<", ">", "<https://x.io>", "<mailto:a@b.io>", "[a](b)",
    " ", "  ", "\t", "a", "word", "snake_case", "5 * 3", "🙂", "\ufe0f", "\u20e3", "é", "1.",
])  # fmt: skip


@given(st.lists(_MARKUP, max_size=24).map("".join))
def test_the_inline_shortcuts_change_nothing(line: str) -> None:
    from inference.text.markdown import _inline

    assert _inline(line) == _inline_every_pass(line)
