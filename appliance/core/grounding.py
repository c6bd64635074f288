"""No invented facts, by construction: every checkable fact in an answer must be in the sources.

A small model given the right line still says "$54 to $180" for a $420 cleaning, or names the
wrong vet from the same paragraph. A prompt cannot stop that; a check can. The facts a caller
would act on (numbers, prices, times, dates and weekdays, phone numbers, e-mail addresses, street
addresses and capitalised names) are pulled out of each answer sentence and looked up, in a
normalised form, in what the answer may draw on: the retrieved text, the caller's own words and
the settings. "$420", "420 dollars" and "four hundred and twenty" are one number; "9:00 a.m.",
"9 am" and "nine" one time; "(555) 201-3344" and "555 201 3344" one phone number.

The check is deliberately strict: a name or number it cannot find fails the sentence, and the
agent then reads the best fact line from the documents instead (a wrong replacement costs a
less fluent answer; a wrong pass costs a caller acting on an invented price).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in
                                                          enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
             "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "twelfth": 12, "twentieth": 20,
             "thirtieth": 30}
# "one" is a pronoun as often as a number ("the one on Pier Street"): never a claim by itself.
_NOT_CLAIMS = {"one", "zero", "second"}
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
# "may" is left out: as a verb it is far more common than the month.
_MONTHS = ("january february march april june july august september october november "
           "december").split()
# Capitalised words that start sentences or are generic, not names a caller would act on.
_COMMON_CAPITALS = frozenset("""
i i'm i'll i've i'd we we're we'll we've our ours us you you're you'll your yours he she it its
they their them the a an this that these those there here yes no sure sorry okay ok of and or but
so if when where what who why how which please thanks thank hello hi hey good great well oh also
unfortunately absolutely certainly of course for in on at to from by with as is are was be do does
can could would should will may might must just all any each every some most many our my let
let's just hmm um uh however otherwise then note mr mrs ms dr st am pm a.m p.m us usa
""".split())
_TITLES = ("dr.", "mr.", "mrs.", "ms.", "prof.")
_STREET = (r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|place|pl|"
           r"court|ct|square|sq|highway|hwy|parkway|pkwy|terrace|suite)")
_STREET_FULL = {"st": "street", "ave": "avenue", "rd": "road", "blvd": "boulevard", "ln": "lane",
                "dr": "drive", "pl": "place", "ct": "court", "sq": "square", "hwy": "highway",
                "pkwy": "parkway"}

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w$])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
                    r"|(?<![\w$])\d{3}[\s.-]\d{4}\b")
_ADDRESS = re.compile(rf"\b(\d+[A-Za-z]?)\s+((?:[A-Z][\w'-]*\s+){{1,3}}{_STREET})\b\.?")
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*(a\.?\s?m\b\.?|p\.?\s?m\b\.?|o'?clock)?", re.I)
_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?(?:st|nd|rd|th)?%?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_NUMBER_WORD_RUN = re.compile(
    r"\b(?:(?:" + "|".join([*_UNITS, *_TENS, *_SCALES, *_ORDINALS])
    + r")\b(?:[\s-]+(?:and[\s-]+)?)?)+",
    re.I)


@dataclass(frozen=True, slots=True)
class Claim:
    """One checkable fact in an answer: its kind, the words as written, and its normal form."""

    kind: str  # number | price | time | phone | email | address | date | name
    text: str
    key: str


@dataclass(slots=True)
class Support:
    """Everything an answer may state, in normal form: built once per turn from its sources."""

    numbers: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    text: str = ""  # lower-case, whitespace-normalised, for whole-phrase look-ups

    @classmethod
    def of(cls, texts: Iterable[str]) -> Support:
        support = cls()
        for text in texts:
            support.add(text)
        return support

    def add(self, text: str) -> None:
        self.numbers |= _numbers_in(text)
        self.phones |= {_digits(m.group()) for m in _PHONE.finditer(text)}
        self.phones |= {_digits(m) for m in re.findall(r"\d[\d\s().-]{6,}\d", text)}
        self.words |= {w.lower().strip("'’-") for w in _WORD.findall(text)}
        self.text += " " + _phrase(text)

    def has(self, claim: Claim) -> bool:
        if claim.kind in ("number", "price", "time"):
            return claim.key in self.numbers
        if claim.kind == "phone":  # with or without the area code
            return any(p.endswith(claim.key) or (len(p) >= 7 and claim.key.endswith(p))
                       for p in self.phones)
        if claim.kind in ("email", "address"):
            return claim.key in self.text
        return claim.key in self.words


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one piece of an answer."""

    unsupported: tuple[Claim, ...]

    @property
    def ok(self) -> bool:
        return not self.unsupported

    @property
    def reason(self) -> str:
        return "; ".join(f"{c.kind} {c.text!r} not in the sources" for c in self.unsupported)


def check(answer: str, support: Support) -> Verdict:
    """Every claim in ``answer`` that ``support`` does not hold."""
    return Verdict(tuple(c for c in claims(answer) if not support.has(c)))


def claims(text: str) -> list[Claim]:
    """The checkable facts in ``text``, each once."""
    found: dict[tuple[str, str], Claim] = {}
    rest = text

    def take(kind: str, match: re.Match[str], key: str) -> None:
        nonlocal rest
        found.setdefault((kind, key), Claim(kind, match.group().strip(), key))
        rest = rest[: match.start()] + " " * (match.end() - match.start()) + rest[match.end():]

    for match in _EMAIL.finditer(text):
        take("email", match, match.group().lower())
    for match in _PHONE.finditer(rest):
        take("phone", match, _digits(match.group())[-10:])
    for match in _ADDRESS.finditer(rest):
        found.setdefault(("address", _phrase(match.group())),
                         Claim("address", match.group().strip(), _phrase(match.group())))
    for kind, key, match in _numeric(rest):
        if match.group().strip().lower() not in _NOT_CLAIMS:
            found.setdefault((kind, key), Claim(kind, match.group().strip(), key))
    for claim in _names(text):
        found.setdefault((claim.kind, claim.key), claim)
    return list(found.values())


def _numeric(text: str) -> list[tuple[str, str, re.Match[str]]]:
    """(kind, normal form, match) for times, prices, numbers and number words."""
    out: list[tuple[str, str, re.Match[str]]] = []
    taken: list[tuple[int, int]] = []
    for match in _TIME.finditer(text):
        if match.group(2) or match.group(3):
            out.append(("time", _time_key(match.group(1), match.group(2)), match))
            taken.append(match.span())
    for match in _NUMBER.finditer(text):
        if any(s <= match.start() < e for s, e in taken):
            continue
        kind = "price" if match.group().startswith("$") else "number"
        if (key := _number_key(match.group())) is not None:
            out.append((kind, key, match))
    for match in _NUMBER_WORD_RUN.finditer(text):
        value = _words_value(match.group())
        if value is not None:
            out.append(("number", str(value), match))
    return out


def _numbers_in(text: str) -> set[str]:
    """Every normal form a source text supports, including both readings of a clock time."""
    keys = {key for _, key, _ in _numeric(text)}
    for match in _TIME.finditer(text):
        if match.group(2) is not None:
            keys.add(_number_key(match.group(1)) or "")
            keys.add(_number_key(match.group(2)) or "")
        hour = int(match.group(1))
        if 12 < hour < 24:  # "17:00" supports "5 p.m."
            keys.add(_time_key(str(hour - 12), match.group(2)))
    keys.discard("")
    return keys


def _time_key(hour: str, minutes: str | None) -> str:
    """'9:00' and '9' are one time; '9:30' stays itself."""
    h = str(int(hour))
    return h if not minutes or int(minutes) == 0 else f"{h}:{minutes}"


def _number_key(raw: str) -> str | None:
    cleaned = re.sub(r"(st|nd|rd|th)$", "", raw.strip("$%").replace(",", ""))
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    normal = value.normalize()
    return format(normal, "f") if normal == normal.to_integral() else str(normal)


def _words_value(phrase: str) -> int | None:
    """'four hundred and twenty' → 420; 'twenty-five' → 25; None when no number word."""
    total, current, seen = 0, 0, False
    for word in re.findall(r"[a-z]+", phrase.lower()):
        if word == "and":
            continue
        if word in _NUMBER_WORDS:
            current += _NUMBER_WORDS[word]
        elif word in _ORDINALS:
            current += _ORDINALS[word]
        elif word in _SCALES:
            current = max(current, 1) * _SCALES[word]
            if word == "thousand":
                total, current = total + current, 0
        else:
            continue
        seen = True
    return total + current if seen else None


def _names(text: str) -> list[Claim]:
    """Capitalised words: names, places, weekdays, months.

    A capitalised word that opens a sentence is only a name when the next word is capitalised
    too ("Tom Baker is our vet"): alone it is most often an ordinary word ("See you then").
    A lone invented first name opening a sentence is the price of not rejecting every answer
    that starts with an uncommon word.
    """
    out = []
    words = list(_WORD.finditer(text))
    for i, match in enumerate(words):
        word = match.group()
        lower = word.lower().strip("'’-")
        if lower in _WEEKDAYS or lower in _MONTHS:
            out.append(Claim("date", word, lower))
            continue
        if not word[0].isupper() or lower in _COMMON_CAPITALS or len(lower) < 2:
            continue
        before = text[: match.start()].rstrip()
        opens = not before or (before[-1] in ".!?:" and not before.lower().endswith(_TITLES))
        follows = i + 1 < len(words) and words[i + 1].group()[0].isupper() and (
            not text[match.end(): words[i + 1].start()].strip())
        if not opens or follows:
            out.append(Claim("name", word, lower))
    return out


def _digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def _phrase(text: str) -> str:
    """Lower case, punctuation gone, street suffixes spelled out: for whole-phrase look-ups."""
    words = re.findall(r"[a-z0-9@.+-]+", text.lower())
    return " ".join(_STREET_FULL.get(w.strip("."), w.strip(".")) for w in words)
