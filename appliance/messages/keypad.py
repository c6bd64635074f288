"""Digits keyed on the phone pad for a call-back number (DTMF), collected until '#' or a pause.

Spoken digits are the weak spot of phone speech recognition (a noisy line turns "five" into
"fine"); a keyed number arrives exact. The entry ends at '#' or after ``KEY_PAUSE_S`` without a
key (Twilio's own <Gather> waits 5 s by default, so callers used to phone menus expect it); '*'
starts it again. Time comes in as an argument, so the session's clock (a fake one in tests)
decides when a pause is over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

KEY_PAUSE_S = 5.0
MAX_DIGITS = 15  # the longest E.164 number; more keys are ignored, not a crash


class Entry(enum.Enum):
    DIGIT = "digit"  # collected; the entry goes on
    DONE = "done"  # '#': the entry is complete
    RESTART = "restart"  # '*': the digits so far are dropped
    IGNORED = "ignored"  # a letter key, or a digit past MAX_DIGITS


@dataclass(slots=True)
class Keypad:
    pause_s: float = KEY_PAUSE_S
    digits: str = ""
    last_at: float | None = None  # when the last digit came

    def press(self, key: str, now: float) -> Entry:
        if key == "*":
            self.digits, self.last_at = "", None
            return Entry.RESTART
        if key == "#":
            return Entry.DONE
        if not key.isdigit() or len(key) != 1 or len(self.digits) >= MAX_DIGITS:
            return Entry.IGNORED
        self.digits += key
        self.last_at = now
        return Entry.DIGIT

    def paused(self, now: float) -> bool:
        """Digits were keyed and none for ``pause_s``: the caller is done."""
        return self.last_at is not None and now - self.last_at >= self.pause_s

    def wait_s(self, now: float) -> float | None:
        """How long until the pause ends the entry (None: nothing keyed yet)."""
        return None if self.last_at is None else max(0.0, self.last_at + self.pause_s - now)

    def take(self) -> str:
        """The digits keyed, and a fresh entry."""
        digits, self.digits, self.last_at = self.digits, "", None
        return digits
