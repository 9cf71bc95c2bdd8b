from __future__ import annotations

import pytest

from inference.text import split_sentences


def test_abbreviations_decimals_quotes_and_ellipses_do_not_split() -> None:
    text = 'Dr. Smith paid $3.50 for e.g. apples... Then he left! "Is it?" she asked. Pi is 3.14 today.'
    assert split_sentences(text) == [
        "Dr. Smith paid $3.50 for e.g. apples...",
        "Then he left!",
        '"Is it?" she asked.',
        "Pi is 3.14 today.",
    ]


def test_newlines_and_paragraphs_separate_and_vanish() -> None:
    chunks = split_sentences("First paragraph here.\n\nSecond one\nstill going.\n\n\n   \n")
    assert chunks[0] == "First paragraph here."
    assert all("\n" not in c and c.strip() == c and c for c in chunks)
    assert " ".join(chunks).replace("  ", " ") == "First paragraph here. Second one still going."


def test_a_long_run_is_cut_at_clauses_then_words() -> None:
    text = "one clause, " * 40 + "and words " * 100
    chunks = split_sentences(text, max_chars=100)
    assert all(len(c) <= 100 for c in chunks)
    assert chunks[0].endswith(",")  # the first cut falls after a clause
    assert " ".join(chunks).split() == text.split()  # nothing lost, order kept


def test_a_run_without_spaces_is_cut_hard() -> None:
    chunks = split_sentences("x" * 1000, max_chars=300)
    assert [len(c) for c in chunks] == [300, 300, 300, 100]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_sentences(text) == []


def test_other_languages_use_their_rules() -> None:
    assert len(split_sentences("Hallo Welt. Wie geht es dir? Gut, danke.", "de")) == 3
