"""Spell out what a character-vocabulary model cannot read: numbers, currency, percentages, ordinals,
dates, times, symbols and common abbreviations, per language, with ``num2words``.

MMS-TTS tokenizers know only a language's letters: "42", "$3.50", "Dr." and "2024-05-01" would vanish or
come out as noise. Phoneme frontends (Piper's espeak-ng) read them themselves and do not use this.
A language ``num2words`` does not know is left as it is (the characters then show up as unsayable).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

__all__ = ["normalize"]

_MONTHS = {
    "en": "January February March April May June July August September October November December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
}
_WORDS: dict[str, dict[str, str]] = {
    "en": {"%": "percent", "&": "and", "+": "plus", "@": "at", "=": "equals", "°": "degrees"},
    "fr": {"%": "pour cent", "&": "et", "+": "plus", "@": "arobase", "=": "égale", "°": "degrés"},
    "de": {"%": "Prozent", "&": "und", "+": "plus", "@": "at", "=": "gleich", "°": "Grad"},
    "es": {"%": "por ciento", "&": "y", "+": "más", "@": "arroba", "=": "igual a", "°": "grados"},
    "it": {"%": "per cento", "&": "e", "+": "più", "@": "chiocciola", "=": "uguale", "°": "gradi"},
    "pt": {"%": "por cento", "&": "e", "+": "mais", "@": "arroba", "=": "igual", "°": "graus"},
    "nl": {"%": "procent", "&": "en", "+": "plus", "@": "apenstaart", "=": "is", "°": "graden"},
}
_ABBREVIATIONS: dict[str, dict[str, str]] = {
    "en": {"Dr.": "Doctor", "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Prof.": "Professor",
           "St.": "Saint", "Jr.": "Junior", "Sr.": "Senior", "vs.": "versus", "etc.": "et cetera",
           "e.g.": "for example", "i.e.": "that is", "approx.": "approximately", "Mt.": "Mount"},
    "fr": {"M.": "Monsieur", "Mme": "Madame", "Mlle": "Mademoiselle", "Dr": "Docteur", "etc.": "et cetera"},
    "de": {"Dr.": "Doktor", "z.B.": "zum Beispiel", "usw.": "und so weiter", "Nr.": "Nummer",
           "bzw.": "beziehungsweise"},
    "es": {"Sr.": "Señor", "Sra.": "Señora", "Dr.": "Doctor", "Dra.": "Doctora", "etc.": "etcétera"},
    "it": {"Sig.": "Signor", "Dott.": "Dottor", "ecc.": "eccetera"},
    "pt": {"Sr.": "Senhor", "Sra.": "Senhora", "Dr.": "Doutor", "etc.": "et cetera"},
    "nl": {"Dhr.": "De heer", "Mevr.": "Mevrouw", "bijv.": "bijvoorbeeld", "enz.": "enzovoort"},
}  # fmt: skip
_CURRENCIES = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_ORDINAL_SUFFIX = {
    "en": r"(?:st|nd|rd|th)",
    "fr": r"(?:er|re|e|ème)",
    "es": r"(?:º|ª|o|a)",
    "it": r"(?:º|ª)",
    "pt": r"(?:º|ª)",
    "nl": r"(?:ste|de|e)",
}

_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_CURRENCY_BEFORE = re.compile(r"([$€£¥])\s?(\d[\d,]*(?:\.\d+)?)")
_CURRENCY_AFTER = re.compile(r"(\d[\d.,]*)\s?([€$£¥])")
_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s?%")
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def _base(language: str) -> str:
    return language.strip().lower().replace("_", "-").split("-")[0]


def _words(value: float | int, lang: str, **kwargs: str) -> str:
    return str(num2words(value, lang=lang, **kwargs))


def _parse(number: str) -> float | int:
    plain = number.replace(",", "")
    return float(plain) if "." in plain else int(plain)


def _currency(lang: str) -> Callable[[str, str], str]:
    def spell(symbol: str, amount: str) -> str:
        value = _parse(amount.replace(",", "") if "." in amount or lang == "en" else amount.replace(",", "."))
        code = _CURRENCIES[symbol]
        try:
            spelled = _words(float(value), lang, to="currency", currency=code)
        except (NotImplementedError, KeyError, ValueError, TypeError):
            return f"{_words(value, lang)} {code}"
        if float(value).is_integer():  # "five dollars", not "five dollars, zero cents"
            zero = re.escape(_words(0, lang))
            spelled = re.sub(rf"(?:,|\s+\w+)?\s+{zero}\s+\w+$", "", spelled)
        return spelled

    return spell


def normalize(text: str, language: str) -> str:
    """``text`` with its numbers, symbols and abbreviations written out in ``language`` (ISO 639-1)."""
    lang = _base(language)
    try:
        num2words(1, lang=lang)
    except NotImplementedError:
        return text
    for short, long in _ABBREVIATIONS.get(lang, {}).items():
        text = re.sub(rf"(?<![\w.]){re.escape(short)}(?=\s|$)", long, text)
    months = _MONTHS.get(lang, "").split()
    if months:

        def date(match: re.Match[str]) -> str:
            year, month, day = (int(g) for g in match.groups())
            if not 1 <= month <= 12 or not 1 <= day <= 31:
                return match.group(0)
            if lang == "en":
                return f"{months[month - 1]} {_words(day, lang, to='ordinal')}, {_words(year, lang, to='year')}"
            return f"{_words(day, lang)} {months[month - 1]} {_words(year, lang, to='year')}"

        text = _DATE.sub(date, text)

    def time_of_day(match: re.Match[str]) -> str:
        hours, minutes = int(match.group(1)), int(match.group(2))
        if lang == "en":
            if minutes == 0:
                return f"{_words(hours, lang)} o'clock"
            spoken = _words(minutes, lang)
            return f"{_words(hours, lang)} {'oh ' + spoken if minutes < 10 else spoken}"
        return f"{_words(hours, lang)} {_words(minutes, lang)}" if minutes else _words(hours, lang)

    text = _TIME.sub(time_of_day, text)
    spell = _currency(lang)
    text = _CURRENCY_BEFORE.sub(lambda m: spell(m.group(1), m.group(2)), text)
    text = _CURRENCY_AFTER.sub(lambda m: spell(m.group(2), m.group(1)), text)
    words = _WORDS.get(lang, {})
    text = _PERCENT.sub(lambda m: f"{_words(_parse(m.group(1).replace(',', '.')), lang)} {words.get('%', '%')}", text)
    suffix = _ORDINAL_SUFFIX.get(lang)
    if suffix:
        text = re.sub(rf"\b(\d+){suffix}\b", lambda m: _words(int(m.group(1)), lang, to="ordinal"), text)

    def number(match: re.Match[str]) -> str:
        raw = match.group(0)
        value = _parse(raw)
        if lang == "en" and isinstance(value, int) and 1100 <= value <= 2099 and "," not in raw:
            return _words(value, lang, to="year")  # "in 1969": nineteen sixty-nine
        return _words(value, lang)

    text = _NUMBER.sub(number, text)
    for symbol, word in words.items():
        text = text.replace(symbol, f" {word} ")
    return re.sub(r"[ \t]{2,}", " ", text).strip()
