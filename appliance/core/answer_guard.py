"""What reaches the caller's ear: each sentence passes the grounding check or is not spoken.

The model's reply is held back one sentence at a time (the unit TTS speaks anyway, so the
caller waits no longer than before) and checked against the turn's sources. The first sentence
that states something the sources do not is dropped with the rest of the reply; if nothing was
spoken yet, the best fact line from the documents is read instead, or the decline when there is
none. Each replacement is logged with its reason and kept on the turn's ``GuardLog`` for the
call log and the bench to count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from appliance.core.grounding import Support, check
from appliance.core.sentences import SentenceChunker, clean_for_speech

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GuardLog:
    """Filled while a reply streams: why (if at all) the model's words were replaced."""

    replaced: str = ""  # the reason; empty when the model's answer was spoken as it came
    fallback: str = ""  # what was said instead ("" when the reply was only cut short)


async def guarded(tokens: AsyncIterator[str], support: Support, fallback: str,
                  record: GuardLog) -> AsyncIterator[str]:
    """``tokens`` as checked sentences; the first unsupported one ends the reply."""
    chunker = SentenceChunker(first_min_words=1 << 30)  # whole sentences only: checkable units
    spoken = 0
    try:
        async for token in tokens:
            for sentence in chunker.push(token):
                if not _passes(sentence, support, fallback, spoken, record):
                    if not spoken:
                        yield fallback
                    return
                spoken += 1
                yield sentence + " "
        for sentence in chunker.flush():
            if not _passes(sentence, support, fallback, spoken, record):
                if not spoken:
                    yield fallback
                return
            yield sentence
    finally:
        if (close := getattr(tokens, "aclose", None)) is not None:
            await close()


def _passes(sentence: str, support: Support, fallback: str, spoken: int,
            record: GuardLog) -> bool:
    verdict = check(sentence, support)
    if verdict.ok:
        return True
    record.replaced = verdict.reason
    record.fallback = "" if spoken else fallback
    log.info("answer not grounded (%s): %r replaced by %r", verdict.reason, sentence,
             record.fallback or "(nothing: cut short)")
    return False


def spoken_fact(line: str) -> str:
    """A document line as a spoken sentence: markup gone, a closing full stop.

    "**Saturday**: 9:00 a.m. – 1:00 p.m." becomes "Saturday: 9:00 a.m. – 1:00 p.m.": read out,
    a fact line *is* the answer a receptionist gives, and it cannot state anything the
    documents do not.
    """
    text = clean_for_speech(line).strip()
    return text if re.search(r"[.!?]$", text) else f"{text}."
