"""The take-a-message conversation: name, call-back number, message, read-back, confirm.

Rule-based, like the call-control intents: the tiny default model cannot run a form reliably,
and every step is a fixed sentence, so nothing here can state an invented fact. The call-back
number defaults to the caller ID ("this number"); a spoken number is read back digit by digit
(the voice's number rules do that for "555-201-3344").
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_YES = re.compile(r"\b(yes|yeah|yep|sure|please|ok(ay)?|correct|right|that'?s right|go ahead)\b",
                  re.I)
_NO = re.compile(r"\b(no|nope|wrong|not right|incorrect)\b", re.I)
_WANTS_MESSAGE = re.compile(r"\b(leave|take|pass on|give)\b.{0,20}\bmessage\b", re.I)
_THIS_NUMBER = re.compile(r"\b(this|same|my|current|caller)\b.{0,10}\b(number|phone|one)\b|"
                          r"\bthe one i'?m calling from\b", re.I)
_NAME_LEAD = re.compile(r"^\s*(my name is|my name's|this is|it'?s|i'?m|i am|name'?s)\s+", re.I)
_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3",
                "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
MAX_NUMBER_TRIES = 2


class Step(enum.Enum):
    NAME = "name"
    NUMBER = "number"
    MESSAGE = "message"
    CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class TakenMessage:
    """A message ready to store: an empty ``callback_number`` means the caller ID."""

    name: str
    callback_number: str
    message: str


@dataclass(slots=True)
class MessageFlow:
    """One message being taken; ``step`` is what the caller's next words answer."""

    step: Step = Step.NAME
    name: str = ""
    number: str = ""
    message: str = ""
    number_tries: int = 0

    @staticmethod
    def wanted(text: str, offered: bool) -> bool:
        """The caller asks to leave a message, or says a short yes right after the offer
        ("ok, and what are your hours?" is a new question, not a yes)."""
        short_yes = len(text.split()) <= 4 and bool(_YES.search(text)) and not _NO.search(text)
        return bool(_WANTS_MESSAGE.search(text)) or (offered and short_yes)

    def opening(self) -> str:
        return "Of course. May I have your name, please?"

    def answer(self, text: str) -> tuple[str, TakenMessage | None]:
        """What to say to the caller's words at this step, and the message once confirmed."""
        text = text.strip()
        if self.step is Step.NAME:
            self.name = _NAME_LEAD.sub("", text).strip(" .!?") or text
            self.step = Step.NUMBER
            return (f"Thank you, {self.name}. What number should we call you back on? "
                    "Say 'this number' to use the one you're calling from."), None
        if self.step is Step.NUMBER:
            return self._take_number(text), None
        if self.step is Step.MESSAGE:
            self.message = text
            self.step = Step.CONFIRM
            return self.read_back(), None
        if _NO.search(text) and not _YES.search(text):
            self.step, self.name, self.number, self.message = Step.NAME, "", "", ""
            return "Sorry about that, let's start again. What's your name?", None
        taken = TakenMessage(self.name, self.number, self.message)
        return "Thank you, I've passed your message on. Is there anything else?", taken

    def read_back(self) -> str:
        number = (_grouped(self.number) if self.number
                  else "the number you're calling from")
        return (f"Let me read that back: {self.name}, call back on {number}, "
                f"message: {self.message.rstrip('.!?')}. Is that right?")

    def _take_number(self, text: str) -> str:
        digits = spoken_digits(text)
        if len(digits) >= 7:
            self.number = digits
        elif not (_THIS_NUMBER.search(text) or _YES.search(text)):
            self.number_tries += 1
            if self.number_tries < MAX_NUMBER_TRIES:
                return "Sorry, I didn't catch that. Could you say the number digit by digit?"
        self.step = Step.MESSAGE
        return "Got it. And what's your message?"


def spoken_digits(text: str) -> str:
    """Digits in ``text``, written ("555 201") or spoken ("five five five, two oh one")."""
    out = []
    for token in re.findall(r"\d+|[a-z]+", text.lower()):
        if token.isdigit():
            out.append(token)
        elif token in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[token])
        elif token in ("double", "triple"):
            out.append(token)
    digits = ""
    repeat = 1
    for token in out:
        if token == "double":
            repeat = 2
        elif token == "triple":
            repeat = 3
        else:
            digits += token * repeat if len(token) == 1 else token
            repeat = 1
    return digits


def _grouped(digits: str) -> str:
    """"5552013344" as "555-201-3344", the form the voice reads digit by digit."""
    if len(digits) == 10:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    if len(digits) == 11 and digits.startswith("1"):
        return f"{digits[1:4]}-{digits[4:7]}-{digits[7:]}"
    return " ".join(digits)
