"""Numbers as a caller hears them: the TTS input, never the transcript."""

from __future__ import annotations

import pytest

from appliance.core.speakable import speakable


@pytest.mark.parametrize("written, spoken", [
    ("It costs $420.", "It costs four hundred and twenty dollars."),
    ("A nail trim is $15.50.", "A nail trim is fifteen dollars and fifty cents."),
    ("Just $1.", "Just one dollar."),
    ("Implants are $2,800.", "Implants are two thousand, eight hundred dollars."),
    ("We carry $2 million cover.", "We carry two million dollars cover."),
    ("We open at 9:00 a.m.", "We open at nine a.m."),
    ("We open at 9 am.", "We open at nine a.m."),
    ("Until 5:30 p.m. today.", "Until five thirty p.m. today."),
    ("Drop-off at 8:05.", "Drop-off at eight oh five."),
    ("Weekdays until 17:30.", "Weekdays until five thirty p.m."),
    ("Saturday: 9:00 a.m. – 1:00 p.m.", "Saturday: nine a.m. to one p.m."),
    ("Call (555) 201-3344.", "Call five five five, two zero one, three three four four."),
    ("Call 555-640-9999 now", "Call five five five, six four zero, nine nine nine nine now"),
    ("It is on the 2nd floor.", "It is on the second floor."),
    ("Since 2004.", "Since two thousand and four."),
    ("A 20% discount.", "A twenty percent discount."),
    ("Groups of 8 or more.", "Groups of eight or more."),
    ("No numbers here.", "No numbers here."),
])
def test_written_numbers_are_spoken(written: str, spoken: str) -> None:
    assert speakable(written) == spoken
