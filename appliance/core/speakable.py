"""Written numbers → the words a receptionist would say, for the voice only.

Piper reads "$420" as "dollar four two zero" and "(555) 201-3344" as "five hundred fifty-five,
two hundred one..."; callers expect "four hundred and twenty dollars" and a phone number digit
by digit. This runs on the text handed to a TTS engine, so the transcript, the call log and the
grounding check keep the written form. Number words come from num2words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

_DIGITS = "zero one two three four five six seven eight nine".split()

_PHONE = re.compile(r"(?<![\w$])(\+?1[\s.-]?)?(\(\d{3}\)\s?|\d{3}[\s.-])(\d{3})[\s.-](\d{4})\b")
_PRICE = re.compile(r"\$(\d[\d,]*)(?:\.(\d{2}))?(\s+(?:million|thousand|billion))?")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})(\s*(?:[ap]\.?\s?m\b\.?))?"
                   r"|\b(\d{1,2})(\s*[ap]\.?\s?m\b\.?)", re.I)
_RANGE = re.compile(r"(?<=\d)\s*[–—-]\s*(?=\$?\d)|(?<=[ap]\.m\.)\s*[–—]\s*(?=\d)", re.I)
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_PERCENT = re.compile(r"\b(\d+(?:\.\d+)?)%")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\b")


def speakable(text: str) -> str:
    """``text`` with prices, times, phone numbers, ordinals, years and numbers in words."""
    steps: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
        (_PHONE, _phone), (_PRICE, _price), (_RANGE, lambda m: " to "), (_TIME, _time),
        (_ORDINAL, lambda m: num2words(int(m.group(1)), to="ordinal")),
        (_PERCENT, lambda m: f"{_words(m.group(1))} percent"),
        (_YEAR, lambda m: num2words(int(m.group(1)), to="year")),
        (_NUMBER, lambda m: _words(m.group())),
    ]
    for pattern, say in steps:
        text = pattern.sub(say, text)
    text = re.sub(r"([ap]\.m\.)\.", r"\1", text)  # "until 17:30." ends once
    return re.sub(r"[ \t]{2,}", " ", text)


def _words(number: str) -> str:
    cleaned = number.replace(",", "")
    value = float(cleaned) if "." in cleaned else int(cleaned)
    return str(num2words(value))


def _phone(match: re.Match[str]) -> str:
    """Digit by digit, in the groups it is written in: "five five five, two zero one, ..."."""
    groups = [re.sub(r"\D", "", g) for g in match.groups()[1:]]
    return ", ".join(" ".join(_DIGITS[int(d)] for d in group) for group in groups)


def _price(match: re.Match[str]) -> str:
    dollars, cents, scale = int(match.group(1).replace(",", "")), match.group(2), match.group(3)
    if scale:
        return f"{num2words(dollars)} {scale.strip()} dollars"
    spoken = f"{num2words(dollars)} dollar{'' if dollars == 1 else 's'}"
    if cents and int(cents):
        spoken += f" and {num2words(int(cents))} cent{'' if int(cents) == 1 else 's'}"
    return spoken


def _time(match: re.Match[str]) -> str:
    """"9:00 a.m." → "nine a.m."; "9:30" → "nine thirty"; "17:30" → "five thirty p.m."."""
    hour = int(match.group(1) or match.group(4))
    minutes = int(match.group(2) or 0)
    suffix = (match.group(3) or match.group(5) or "").strip().lower().replace(" ", "")
    if not suffix and 12 < hour < 24:
        hour, suffix = hour - 12, "pm"
    said = num2words(hour)
    if minutes:
        said += f" {'oh ' if minutes < 10 else ''}{num2words(minutes)}"
    if suffix:
        said += " a.m." if suffix.startswith("a") else " p.m."
    return said
