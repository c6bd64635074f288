"""Transcript redaction: what is replaced, and what is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.redaction import Redactor, luhn, redactor
from tests.conftest import make_settings

CASES = [
    # cards: Luhn-checked runs of 13-19 digits, spaces or dashes allowed
    ("my card is 4111 1111 1111 1111, expiry next May", "my card is [card], expiry next May"),
    ("it's 4111-1111-1111-1111", "it's [card]"),
    ("amex 378282246310005 please", "amex [card] please"),
    ("4111 1111 1111 1112 fails the check", "4111 1111 1111 1112 fails the check"),
    ("order 12345678", "order 12345678"),
    # e-mail, written or spoken
    ("write to ann.lee+dental@example.co.uk today", "write to [email] today"),
    ("it's bob at gmail dot com", "it's [email]"),
    ("we're at Main Street", "we're at Main Street"),
    # phone numbers, national (the region's) and international
    ("call me back on 555-123-4567", "call me back on [phone]"),
    ("my number is (415) 555-2671.", "my number is [phone]."),
    ("from London, +44 20 7946 0958", "from London, [phone]"),
    ("four one five, 5552671", "four one five, [phone]"),
    # what is not a phone number stays
    ("we open at 9:30 on 2024-05-01", "we open at 9:30 on 2024-05-01"),
    ("a cleaning is $120, a crown $1,250", "a cleaning is $120, a crown $1,250"),
    ("my zip is 94110 and I was born in 1984", "my zip is 94110 and I was born in 1984"),
    ("for emergencies call 911", "for emergencies call 911"),
    ("", ""),
    # all three in one turn
    ("card 4242424242424242, mail a@b.io, phone 212 555 0100",
     "card [card], mail [email], phone [phone]"),
]


@pytest.mark.parametrize(("said", "stored"), CASES)
def test_redaction(said: str, stored: str) -> None:
    assert Redactor("US")(said) == stored


def test_luhn() -> None:
    assert luhn("4111111111111111") and luhn("79927398713")
    assert not luhn("4111111111111112") and not luhn("79927398710")


def test_the_region_reads_national_numbers() -> None:
    assert Redactor("GB")("ring 020 7946 0958") == "ring [phone]"


def test_off_by_default(tmp_path: Path) -> None:
    assert redactor(make_settings(tmp_path)) is None
    on = redactor(make_settings(tmp_path, redact_transcripts=True))
    assert on is not None and on("555-123-4567") == "[phone]"
