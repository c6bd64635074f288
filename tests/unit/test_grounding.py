"""The grounding check: what counts as a fact, and which written forms are the same fact."""

from __future__ import annotations

import pytest

from appliance.core.grounding import Support, check, claims

SOURCES = Support.of([
    "Dental cleaning for dogs: $420 under anaesthetic.",
    "Dr. Ana Silva is our head vet. We are at 214 Pier Street, Bayport.",
    "Saturday: 9:00 a.m. to 1:00 p.m. Weekdays until 17:30.",
    "Call (555) 201-3344 or write to desk@pier.vet. The first visit takes about 90 minutes.",
    "Spaying costs 1,250 dollars; nail trims are $15.50.",
])


@pytest.mark.parametrize("answer", [
    "It costs $420.",
    "It costs four hundred and twenty dollars.",
    "Our head vet is Dr. Ana Silva.",
    "We are at 214 Pier St.",
    "We open at 9 am on Saturday.",
    "On Saturday we're open nine to one.",
    "We close at 5:30 pm on weekdays.",
    "Call 555-201-3344.",
    "You can call 201 3344.",
    "Write to desk@pier.vet.",
    "The first visit takes ninety minutes.",
    "Spaying is $1,250 and a nail trim $15.50.",
    "Spaying is $1250.",
    "Yes, we can help with that.",
    "Sure, one of our vets can see you.",
])
def test_supported_answers_pass(answer: str) -> None:
    verdict = check(answer, SOURCES)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("answer, culprit", [
    ("It is $54 to $180.", "'$54'"),
    ("The telescope repair is 25 cents.", "'25'"),
    ("Our head vet is Dr. Tom Baker.", "'Tom'"),
    ("We are at 12 Pier Street.", "'12'"),
    ("We are at 214 Harbor Street.", "'Harbor'"),
    ("We open at 10 on Saturday.", "'10'"),
    ("We are open on Sunday.", "'Sunday'"),
    ("Call 555-201-9999.", "phone"),
    ("Write to info@pier.vet.", "email"),
    ("We close at 6:45 pm.", "'6:45"),
    ("It costs fifty dollars.", "'fifty"),
    ("Open until March 3.", "'March'"),
])
def test_invented_facts_fail_and_say_why(answer: str, culprit: str) -> None:
    verdict = check(answer, SOURCES)
    assert not verdict.ok
    assert culprit in verdict.reason


def test_the_callers_own_words_support_an_answer() -> None:
    support = Support.of(["Nail trims are $15.", "can I come at 4:30 on friday"])
    assert check("Yes, 4:30 on Friday works.", support).ok


def test_claims_name_their_kind() -> None:
    kinds = {(c.kind, c.key) for c in claims("Dr. Ana Silva, $420 at 9:30 a.m., (555) 201-3344")}
    assert {("name", "ana"), ("name", "silva"), ("price", "420"), ("time", "9:30"),
            ("phone", "5552013344")} <= kinds


def test_one_is_not_a_number_claim() -> None:
    assert not [c for c in claims("The one on Pier Street.") if c.kind == "number"]
