"""The take-a-message conversation: name, call-back number, message, read-back, confirm.

Rule-based, like the call-control intents: the tiny default model cannot run a form reliably,
and every step is a fixed sentence, so nothing here can state an invented fact. The call-back
number defaults to the caller ID ("this number"); a spoken number is read back digit by digit
(the voice's number rules do that for "555-201-3344"). A number keyed on the phone pad
(messages/keypad.py) is read back at once and confirmed before the message is asked for: the
caller cannot see what they keyed, and a slipped key is cheaper to fix now than at the end.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from appliance.messages.keypad import Entry, Keypad

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
MIN_NUMBER_DIGITS = 7
KEY_AGAIN = "Please key the number again, then press the pound key."


class Step(enum.Enum):
    NAME = "name"
    NUMBER = "number"
    CHECK_NUMBER = "check_number"  # a keyed number was read back: is it right?
    MESSAGE = "message"
    CONFIRM = "confirm"


@dataclass(frozen=True, slots=True)
class TakenMessage:
    """A message ready to store: an empty ``callback_number`` means the caller ID."""

    name: str
    callback_number: str
    message: str


@dataclass(frozen=True, slots=True)
class Keyed:
    """A keyed entry that ended: the keys as pressed (for the call log) and what to say."""

    keys: str
    said: str


@dataclass(slots=True)
class MessageFlow:
    """One message being taken; ``step`` is what the caller's next words answer."""

    step: Step = Step.NAME
    name: str = ""
    number: str = ""
    message: str = ""
    number_tries: int = 0
    keypad: Keypad = field(default_factory=Keypad)

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
                    "Say 'this number' to use the one you're calling from, or key it in "
                    "and press the pound key."), None
        if self.step is Step.NUMBER:
            self.keypad.take()  # spoken words replace a half-keyed entry
            return self._take_number(text), None
        if self.step is Step.CHECK_NUMBER:
            return self._check_number(text), None
        if self.step is Step.MESSAGE:
            self.message = text
            self.step = Step.CONFIRM
            return self.read_back(), None
        if _NO.search(text) and not _YES.search(text):
            self.step, self.name, self.number, self.message = Step.NAME, "", "", ""
            return "Sorry about that, let's start again. What's your name?", None
        taken = TakenMessage(self.name, self.number, self.message)
        return "Thank you, I've passed your message on. Is there anything else?", taken

    @property
    def takes_keys(self) -> bool:
        """Whether key presses are digits of the call-back number (so '0' is not a transfer)."""
        return self.step in (Step.NUMBER, Step.CHECK_NUMBER)

    def press(self, key: str, now: float) -> Keyed | None:
        """A key pressed while the number is asked for; what to say once the entry ends."""
        if self.step is Step.CHECK_NUMBER and (key.isdigit() or key == "*"):
            self.step, self.number = Step.NUMBER, ""  # keying again replaces the number
        entry = self.keypad.press(key, now)
        if entry is Entry.RESTART:
            return Keyed("*", "Okay, let's start over. Key the number, then press the pound key.")
        if entry is Entry.DONE and self.step is Step.NUMBER:
            digits = self.keypad.take()
            return self._keyed(digits, digits + "#")
        return None

    def pause(self, now: float) -> Keyed | None:
        """The caller stopped keying for a while: the digits so far are the number."""
        if self.step is Step.NUMBER and self.keypad.paused(now):
            digits = self.keypad.take()
            return self._keyed(digits, digits)
        return None

    def wait_s(self, now: float) -> float | None:
        """How long until a pause ends the keyed entry (None: nothing is being keyed)."""
        return self.keypad.wait_s(now) if self.step is Step.NUMBER else None

    def _keyed(self, digits: str, keys: str) -> Keyed:
        if len(digits) < MIN_NUMBER_DIGITS:
            return Keyed(keys, f"Sorry, that number seems too short. {KEY_AGAIN}")
        self.number, self.step = digits, Step.CHECK_NUMBER
        return Keyed(keys, f"I have {_grouped(digits)}. Is that right?")

    def _check_number(self, text: str) -> str:
        if _NO.search(text) and not _YES.search(text):
            self.step, self.number = Step.NUMBER, ""
            return f"Sorry about that. {KEY_AGAIN} Or say it digit by digit."
        if len(spoken_digits(text)) >= MIN_NUMBER_DIGITS:  # they said it instead
            return self._take_number(text)
        if _YES.search(text):
            self.step = Step.MESSAGE
            return "Got it. And what's your message?"
        return f"Is {_grouped(self.number)} the right number? Please say yes or no."

    def read_back(self) -> str:
        number = (_grouped(self.number) if self.number
                  else "the number you're calling from")
        return (f"Let me read that back: {self.name}, call back on {number}, "
                f"message: {self.message.rstrip('.!?')}. Is that right?")

    def _take_number(self, text: str) -> str:
        digits = spoken_digits(text)
        if len(digits) >= MIN_NUMBER_DIGITS:
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
