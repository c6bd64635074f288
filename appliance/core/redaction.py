"""Card numbers, e-mail addresses and phone numbers out of stored transcripts.

Applied by the call recorder (core/recorder.py), the one writer of transcripts for both front
doors, to what it stores: the caller's words, the agent's words and what was heard, and the
words a barge-in event keeps. The model's memory of the call is not redacted (the caller may
be spelling out an address it must repeat back), nor is a message left for staff: its
call-back number and words are the message, and redacting them would make it useless.

- a card number: 13 to 19 digits, single spaces or dashes allowed between them, passing the
  Luhn check (so an order number or a date is left alone);
- an e-mail address, written (``ann@example.com``) or as Whisper sometimes writes it spoken
  (``ann at example dot com``);
- a phone number, by Google's libphonenumber (``phonenumbers``) at its "possible number"
  leniency, national numbers read in ``phone_region``: "valid" would keep the 555 numbers
  people give as examples, and a number is a number to redact even if unassigned.
  Numbers said as words ("five five five...") are not found.
"""

from __future__ import annotations

import re

import phonenumbers

from appliance.config import Settings

CARD = "[card]"
EMAIL = "[email]"
PHONE = "[phone]"

_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}"
                    r"|\b[\w.%+-]+ at [\w-]+(?: dot [\w-]+)*? dot [a-z]{2,}\b", re.IGNORECASE)


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


class Redactor:
    def __init__(self, region: str = "US") -> None:
        self.region = region.upper()

    def __call__(self, text: str) -> str:
        if not text:
            return text
        text = _CARD.sub(self._card, text)
        text = _EMAIL.sub(EMAIL, text)
        return self._phones(text)

    @staticmethod
    def _card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return CARD if luhn(digits) else match.group()

    def _phones(self, text: str) -> str:
        found = list(phonenumbers.PhoneNumberMatcher(text, self.region,
                                                     leniency=phonenumbers.Leniency.POSSIBLE))
        for match in reversed(found):
            text = text[:match.start] + PHONE + text[match.end:]
        return text


def redactor(settings: Settings) -> Redactor | None:
    """The redaction ``redact_transcripts`` asks for, if any."""
    return Redactor(settings.phone_region) if settings.redact_transcripts else None
