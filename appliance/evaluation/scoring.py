"""One answer → one verdict: right fact, wrong fact, invented fact, right or wrong decline.

"Invented" is checked against the business's whole document set plus the caller's words, with
the same normalisation as the grounding guard (so "$420" and "four hundred and twenty dollars"
are one fact), and independently of the guard's own verdict on the turn: the guard sees only
the facts of one turn, the score everything a business published.
"""

from __future__ import annotations

import enum
import re

from appliance.core.grounding import Support, check, claims
from appliance.evaluation.dataset import Question

NUMERIC = frozenset({"number", "price", "time", "phone"})


class Verdict(enum.Enum):
    RIGHT = "right_fact"
    WRONG = "wrong_fact"
    INVENTED = "invented_fact"
    DECLINED_RIGHT = "correct_decline"
    DECLINED_WRONG = "wrong_decline"


def has_fact(answer: str, expected: str) -> bool:
    """Numbers match in any written form ("8" is in "8:00 a.m."); words as written."""
    wanted = claims(expected)
    if wanted and all(c.kind in NUMERIC for c in wanted):
        support = Support.of([answer])
        return all(support.has(c) for c in wanted)
    squash = lambda s: re.sub(r"[\s-]+", " ", s.lower())  # noqa: E731
    return squash(expected) in squash(answer)


def score(question: Question, answer: str, declined: bool, documents: Support,
          asked: list[str]) -> tuple[Verdict, str]:
    """The verdict and, for an invented fact, what was invented."""
    if declined:
        return (Verdict.DECLINED_RIGHT if question.decline else Verdict.DECLINED_WRONG), ""
    caller = Support.of(asked)
    unsupported = [c for c in check(answer, documents).unsupported if not caller.has(c)]
    if unsupported:
        return Verdict.INVENTED, "; ".join(f"{c.kind} {c.text!r}" for c in unsupported)
    if not question.decline and all(has_fact(answer, e) for e in question.expect):
        return Verdict.RIGHT, ""
    return Verdict.WRONG, ""
