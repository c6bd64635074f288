"""Call slots and socket tickets, on a hand-moved clock."""

from __future__ import annotations

from appliance.telephony.sids import CALL_SID, STREAM_SID
from appliance.web.runtime import CallSlots

A, B, C = ("CA" + c * 32 for c in "abc")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_ticket_admits_its_own_call_once() -> None:
    slots = CallSlots(limit=2, ticket_s=30, now=Clock())
    ticket = slots.reserve(A)
    assert ticket and len(ticket) >= 24
    assert slots.admit(B, ticket) == "no-ticket"  # not a call the webhook admitted
    assert slots.admit(A, "guess") == "bad-ticket"  # a wrong guess does not burn the real one
    assert slots.admit(A, ticket) is None and slots.active == {A}
    assert slots.admit(A, ticket) == "no-ticket"  # used
    assert slots.reserve(A) is None  # a live call is not re-admitted
    slots.release(A)
    assert slots.count() == 0


def test_a_ticket_expires_and_its_slot_with_it() -> None:
    clock = Clock()
    slots = CallSlots(limit=1, ticket_s=30, now=clock)
    ticket = slots.reserve(A)
    assert ticket and slots.reserve(B) is None  # full: the reservation holds the slot
    clock.t += 30
    assert slots.admit(A, ticket) == "expired-ticket"
    assert slots.count() == 0 and slots.reserve(B)


def test_the_limit_holds_at_admission_and_a_repeat_webhook_gets_a_fresh_ticket() -> None:
    slots = CallSlots(limit=2, ticket_s=30, now=Clock())
    first = slots.reserve(A)
    again = slots.reserve(A)  # Twilio retried the webhook: the newest ticket counts
    assert first and again and first != again and slots.count() == 1
    assert slots.admit(A, first) == "bad-ticket"
    ticket_b = slots.reserve(B)
    assert ticket_b and slots.reserve(C) is None
    slots.active.add(C)  # however a slot got taken, admission checks the limit again
    slots.active.add("CAother")
    assert slots.admit(B, ticket_b) == "over-limit"


def test_sid_formats() -> None:
    assert CALL_SID.fullmatch(A) and not CALL_SID.fullmatch("CA1")
    assert not CALL_SID.fullmatch(A.upper()) and not CALL_SID.fullmatch(A + "\n")
    assert STREAM_SID.fullmatch("MZ" + "0" * 32) and not STREAM_SID.fullmatch("MZx")
