"""Control characters in a request's text: line breaks and tabs become spaces, the rest vanish."""

from __future__ import annotations

import unicodedata

import pytest

from service.synthesis import _without_controls


def _reference(text: str) -> str:
    """The rule, character by character (what the fast path for printable text must agree with)."""
    return "".join(
        " " if ch in "\r\n\t\v\f" else ch for ch in text if ch in "\r\n\t\v\f" or unicodedata.category(ch)[0] != "C"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Plain printable text, with punctuation!",
        "",
        " ",
        "line\nbreak\r\nand\ttab\vand\fform feed",
        "nul\x00bell\x07escape\x1b delete\x7f",
        "zero\u200bwidth\u200djoiner, bidi \u202eoverride\u202c, bom \ufeff, soft\u00adhyphen",
        "no-break\u00a0space, em\u2003space, line\u2028separator, paragraph\u2029separator",
        "private use \ue000, unassigned \U000e0080, combining e\u0301",
        "שלום مرحبا 你好 🙂 👩‍👩‍👧",
    ],
)
def test_controls_are_removed_and_everything_else_kept(text: str) -> None:
    assert _without_controls(text) == _reference(text)


def test_printable_text_comes_back_as_the_same_object() -> None:
    text = "Nothing here to change, not even an accent: café."
    assert _without_controls(text) is text
