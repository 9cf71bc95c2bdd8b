from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.text import split_sentences
from inference.text.segment import SentenceBuffer


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


# ------------------------------------------------------------------ text arriving in pieces (SentenceBuffer)

LLM_ANSWER = (
    'Dr. Smith paid $3.50 for it, i.e. almost nothing. "Really?" she asked... Yes!\n\n'
    "- First item\n- Second item\n\nThe end"
)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_pieces_give_the_sentences_of_the_whole_text_in_order(size: int) -> None:
    buffer = SentenceBuffer("en")
    said: list[str] = []
    for piece in _pieces(LLM_ANSWER, size):
        said += buffer.add(piece)
    said.append(buffer.flush())
    assert [s.strip() for s in said if s.strip()] == [s.strip() for s in split_sentences(LLM_ANSWER)]


def test_a_sentence_waits_until_a_word_after_it_has_ended() -> None:
    buffer = SentenceBuffer("en")
    assert buffer.add("It costs $3.") == []  # "$3." may go on as "$3.50"
    assert buffer.add("50 today. ") == []  # the last sentence might go on
    assert buffer.add("Next") == []  # nor can a quote mark after a full stop be placed before a word ends
    assert buffer.add(" one") == ["It costs $3.50 today. "]
    assert buffer.pending == "Next one"
    assert buffer.add(".\n\n") == ["Next one."]  # a paragraph break ends it at once
    assert buffer.flush() == ""


def test_a_long_run_without_a_sentence_end_is_handed_out_at_a_space() -> None:
    buffer = SentenceBuffer("en", max_chars=40)
    said: list[str] = []
    for word in ("word " * 30).split(" "):
        said += buffer.add(word + " ")
    assert said
    assert all(len(s) <= 40 for s in said)
    assert all(s.endswith(" ") for s in said)  # never inside a word
    assert "".join(said) + buffer.pending == "word " * 30 + " "


def test_clear_and_flush_forget_what_waits() -> None:
    buffer = SentenceBuffer("en")
    buffer.add("Half a sen")
    buffer.clear()
    assert buffer.pending == ""
    assert buffer.add("   ") == []
    assert buffer.flush() == ""


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("Let me check that.", True),
        ('He said "yes."', True),
        ("Is it (really?) ", True),
        ("Wait...", True),
        ("\u4f60\u597d\u3002", True),  # a CJK full stop
        ("Half a sen", False),
        ("It costs $3.50, or", False),
        ("   ", False),
    ],
)
def test_a_stop_at_the_end_of_the_waiting_text_is_seen(text: str, stop: bool) -> None:
    buffer = SentenceBuffer("en")
    assert buffer.add(text) == []  # nothing after it: not settled by text
    assert buffer.ends_with_a_stop is stop


def test_a_clause_is_taken_up_to_its_last_settled_break() -> None:
    buffer = SentenceBuffer("en")
    assert buffer.add("Hello, and thank you for calling, all") == []
    # "calling, " is not settled until "all" has ended; "Hello, " alone is too short to say on its own.
    assert buffer.take_clause() == ""
    assert buffer.add(" of our agents; they") == []
    assert buffer.take_clause() == "Hello, and thank you for calling, "  # "they" may yet go on
    assert buffer.add(" are") == []
    assert buffer.take_clause() == "all of our agents; "
    assert buffer.pending == "they are"
    assert buffer.take_clause() == ""
    assert buffer.add(" busy. Next") == []  # the sentence goes on as before: it ends with "busy."
    assert buffer.add(" one") == ["they are busy. "]


@pytest.mark.parametrize(
    "text",
    [
        "See [the guide, chapter two](https://example.com/a) for more",  # a link's text
        "Run `make test, then make lint` before you push it",  # a code span
        "It is **very, very** important to know",  # emphasis
        "The price (in dollars, before tax) is high today",  # a parenthesis
        "The price is 1,000,000 dollars or more",  # a number's commas are not breaks
    ],
)
def test_a_clause_never_cuts_markup_open_nor_a_number(text: str) -> None:
    buffer = SentenceBuffer("en")
    buffer.add(text + " and so on ")
    assert buffer.take_clause() == ""  # the only break in each is inside the markup
    assert buffer.pending == text + " and so on "


def test_markup_closed_before_the_break_is_no_obstacle() -> None:
    buffer = SentenceBuffer("en")
    buffer.add("See [the guide](https://example.com/a) first, then the rest ")
    assert buffer.take_clause() == "See [the guide](https://example.com/a) first, "


def visible(text: str) -> str:
    return "".join(text.split())


@given(st.lists(st.tuples(st.text(alphabet=" .!?abc\n$3,;", max_size=12), st.booleans()), max_size=30))
def test_nothing_is_lost_or_reordered_when_clauses_are_taken(steps: list[tuple[str, bool]]) -> None:
    buffer = SentenceBuffer("en", max_chars=25)
    said: list[str] = []
    for piece, take in steps:
        said += buffer.add(piece)
        if take:
            said.append(buffer.take_clause())
    assert visible("".join(said) + buffer.pending) == visible("".join(piece for piece, _ in steps))
    assert all(s.strip() for s in said if s)


@given(st.lists(st.text(alphabet=" .!?abc\n$3,", max_size=12), max_size=30))
def test_nothing_is_lost_or_reordered(pieces: list[str]) -> None:
    buffer = SentenceBuffer("en", max_chars=25)
    said = [s for piece in pieces for s in buffer.add(piece)]

    # Every character comes back once, in order (blank runs between sentences aside), and none is blank.
    assert visible("".join(said) + buffer.pending) == visible("".join(pieces))
    assert all(s.strip() for s in said)
