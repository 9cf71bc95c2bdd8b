"""The SSML subset (inference.text.ssml): what is honoured, what is reported, what is refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.text.ssml import MAX_BREAK_S, Segment, SsmlError, looks_like_ssml, parse_ssml


def test_breaks_become_pauses_around_the_text() -> None:
    parsed = parse_ssml('<speak><break time="300ms"/>Hello <break time="1s"/><break strength="weak"/> world</speak>')
    assert parsed.segments == (Segment("Hello", pause_before_s=0.3, pause_after_s=1.25), Segment("world"))
    assert parsed.ignored == ()


def test_a_break_is_at_most_ten_seconds_and_a_document_at_most_five_minutes_of_them() -> None:
    parsed = parse_ssml('<speak>Wait<break time="90s"/><break time="9s"/>done</speak>')
    assert parsed.segments[0].pause_after_s == MAX_BREAK_S
    thirty = "".join(f'{i}<break time="10s"/>' for i in range(30))
    assert len(parse_ssml(f"<speak>{thirty}</speak>").segments) == 30  # 300 s: allowed
    with pytest.raises(SsmlError, match="asks for 310 s of silence in all; at most 300 s"):
        parse_ssml(f'<speak>{thirty}and<break time="10s"/></speak>')


@pytest.mark.parametrize(
    ("rate", "factor"),
    [("slow", 0.64), ("x-fast", 2.0), ("medium", 1.0), ("80%", 0.8), ("+25%", 1.25), ("-50%", 0.5), ("1.5", 1.5)],
)
def test_prosody_rates(rate: str, factor: float) -> None:
    parsed = parse_ssml(f'<speak>Before. <prosody rate="{rate}">During.</prosody> After.</speak>')
    assert [(s.text, s.rate) for s in parsed.segments] == [("Before.", 1.0), ("During.", factor), ("After.", 1.0)]


def test_nested_rates_multiply() -> None:
    parsed = parse_ssml('<speak><prosody rate="50%">a <prosody rate="50%">b</prosody> c</prosody></speak>')
    assert [(s.text, s.rate) for s in parsed.segments] == [("a", 0.5), ("b", 0.25), ("c", 0.5)]


def test_say_as_sub_paragraphs_and_entities() -> None:
    parsed = parse_ssml(
        '<?xml version="1.0"?><speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        '<p><s>Call <say-as interpret-as="characters">IBM</say-as> &amp; co.</s><s>About the '
        '<sub alias="World Wide Web">WWW</sub>.</s></p><p>Bye &lt;3</p></speak>'
    )
    assert [s.text for s in parsed.segments] == ["Call I B M & co.", "About the World Wide Web .", "Bye <3"]


def test_elements_without_effect_are_read_for_their_text_and_named() -> None:
    parsed = parse_ssml(
        '<speak><voice name="x"><emphasis level="strong">Hi</emphasis></voice><mark name="m"/> '
        '<prosody pitch="high" volume="loud">there</prosody> <phoneme ph="təˈmɑːtəʊ">tomato</phoneme></speak>'
    )
    assert [s.text for s in parsed.segments] == ["Hi there tomato"]
    assert parsed.ignored == ("voice", "emphasis", "mark", "prosody pitch", "prosody volume", "phoneme")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<speak>unclosed", "not well-formed: no element found: line 1, column 15"),
        ("<speak>Hi <b>there</speak>", "not well-formed: mismatched tag"),
        ("<p>Hi</p>", "the root element must be <speak>, not <p>"),
        ("<speak>Hi</speak> trailing", "junk after document element"),
        ('<speak><break time="soon"/></speak>', '<break time="soon">'),
        ('<speak><break strength="huge"/></speak>', '<break strength="huge">: use one of none, x-weak'),
        ('<speak><prosody rate="warp">x</prosody></speak>', '<prosody rate="warp">'),
        ('<speak><prosody rate="-100%">x</prosody></speak>', '<prosody rate="-100%">'),
        ("<speak><sub>WWW</sub></speak>", "<sub> needs an alias"),
    ],
)
def test_malformed_ssml_is_refused_saying_what_and_where(document: str, message: str) -> None:
    with pytest.raises(SsmlError) as refused:
        parse_ssml(document)
    assert message in str(refused.value)


def test_doctypes_are_refused_so_entities_cannot_expand() -> None:
    laughs = '<!DOCTYPE speak [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><speak>&b;&b;&b;</speak>'
    with pytest.raises(SsmlError, match="DOCTYPE is not allowed"):
        parse_ssml(laughs)
    external = '<!DOCTYPE speak SYSTEM "file:///etc/passwd"><speak>x</speak>'
    with pytest.raises(SsmlError, match="DOCTYPE is not allowed"):
        parse_ssml(external)


@pytest.mark.parametrize(
    ("text", "ssml"),
    [
        ("<speak>Hi</speak>", True),
        ('  \n<speak version="1.1">Hi</speak>', True),
        ('<?xml version="1.0"?>\n<speak>Hi</speak>', True),
        ("<speaker>Hi</speaker>", False),
        ("Say <speak> out loud", False),
        ("# <speak>", False),
    ],
)
def test_ssml_is_recognised_by_its_root(text: str, ssml: bool) -> None:
    assert looks_like_ssml(text) is ssml


@given(st.text(max_size=200))
def test_any_text_inside_speak_parses_or_is_refused_cleanly(text: str) -> None:
    # Markup characters in the text may be refused, with a message: never another exception.
    with contextlib.suppress(SsmlError):
        parse_ssml(f"<speak>{text}</speak>")
