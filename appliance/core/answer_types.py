"""What kind of fact a question asks for, and whether a document line offers that kind.

"What's the number for emergencies?" wants a phone number, and of two lines that both say
"emergency" the one with "(555) 640-9999" is the answer, not the one saying what to do in an
emergency. It is a tie-breaker, never a match by itself: weighted like the question's
strongest word, with "open" and a bare "where" as cues, it overruled the words on the tuning
businesses ("are you open on saturdays" got Monday's hours over "Saturday and Sunday: closed");
without those cues and at 0.6 of it, it picked the price line for "how much is teeth
whitening" over the whitening aftercare line, and broke no other question. Since the price and
phone words themselves no longer count as words of the topic (core/agent.py ``_topic``), it is
0.8 of it (agent.TYPE_BONUS).
"""

from __future__ import annotations

import re

from appliance.core.grounding import claims

_ASKS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(rf"\b({words})\b", re.I))
    for kind, words in (
        ("price", r"how much|cost|costs|price|prices|charge|charges|fee|fees|rate"),
        ("phone", r"phone|number|call you|ring you"),
        ("time", r"what time|when|how late|how early|opening hours|office hours"),
        ("duration", r"how long|how quickly|how fast|how soon"),
        ("email", r"e-?mail"),
        ("place", r"address|located|location|where are you|where is your"),
        ("person", r"who"),
    ))
_DURATION = re.compile(r"\b\d+\s*(minutes?|hours?|days?|weeks?|months?)\b|\bwithin\b", re.I)
_PERSON = re.compile(r"\b(Dr\.|[A-Z][a-z]+)\s+[A-Z][a-z]+")


def asked(question: str) -> set[str]:
    """The kinds of fact ``question`` asks for (none for a yes/no or open question)."""
    return {kind for kind, pattern in _ASKS if pattern.search(question)}


def offered(line: str) -> set[str]:
    """The kinds of fact ``line`` states."""
    kinds = {c.kind for c in claims(line)}
    out: set[str] = {k for k in ("price", "phone", "time", "email") if k in kinds}
    if "address" in kinds:
        out.add("place")
    if _DURATION.search(line):
        out.add("duration")
    if _PERSON.search(line):
        out.add("person")
    return out
