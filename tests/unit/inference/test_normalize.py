"""Spelling out what MMS character vocabularies cannot read."""

from __future__ import annotations

from typing import Any

import pytest

from inference.text.normalize import normalize


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("I have 42 eggs.", "en", "I have forty-two eggs."),
        ("It costs $3.50.", "en", "It costs three dollars, fifty cents."),
        ("It costs $5 now.", "en", "It costs five dollars now."),
        ("Dr. Smith is here.", "en", "Doctor Smith is here."),
        ("On 2024-05-01 we met.", "en", "On May first, twenty twenty-four we met."),
        ("She came 2nd, not 21st.", "en", "She came second, not twenty-first."),
        ("In 1969 they landed.", "en", "In nineteen sixty-nine they landed."),
        ("About 25% of 1,234.", "en", "About twenty-five percent of one thousand, two hundred and thirty-four."),
        ("Meet at 5:30 or 7:00 or 9:05.", "en", "Meet at five thirty or seven o'clock or nine oh five."),
        ("Pi is 3.14 and -5 is less.", "en", "Pi is three point one four and minus five is less."),
        ("Salt & pepper.", "en-US", "Salt and pepper."),
        ("Il a 42 ans.", "fr", "Il a quarante-deux ans."),
        ("Ça coûte 3,50 €.", "fr", "Ça coûte trois euros et cinquante centimes."),
        ("Es kostet 5€, z.B. heute.", "de", "Es kostet fünf Euro, zum Beispiel heute."),
        ("Tengo 3 gatos.", "es_ES", "Tengo tres gatos."),
    ],
)
def test_spelled_out(text: str, language: str, expected: str) -> None:
    assert normalize(text, language) == expected


def test_words_and_unknown_languages_are_left_alone() -> None:
    assert normalize("Nothing to change here.", "en") == "Nothing to change here."
    assert normalize("Room 42.", "xx") == "Room 42."  # num2words does not know it: unchanged, and reported
    assert normalize("model B2B and COVID19", "en") == "model B2B and COVID19"  # digits inside words stay


def test_mms_frontend_speaks_numbers_and_reports_what_it_cannot_say(tiny_backend: Any) -> None:
    frontend = tiny_backend.frontend
    with_digits = frontend.encode("Room 42.")[0]
    spelled = frontend.encode("Room forty-two.")[0]
    assert with_digits.tolist() == spelled.tolist()  # the digits were not dropped: they became words
    assert tiny_backend.unsayable("Hello 42 ☃ Straße $5!") == "☃ß"  # punctuation is not reported
    assert tiny_backend.unsayable("Plain words, only.") == ""
