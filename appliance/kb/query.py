"""Caller words → search words: what ASR hands over is not how documents are written.

Whisper and ConversationRelay give "um where do i park" or "What's your address?": the
fillers and punctuation go, and a few paraphrases that share no word with the text that answers
them get the words the documents use ("address" → "located", "where are you" → "address").
Stemming ("park" / "parking") is left to the lexical index; this map is only for pairs no
stemmer joins. It was written from common ways callers ask, before the evaluation set, and is
not tuned on the report businesses.
"""

from __future__ import annotations

import re

# Words that say nothing about the topic of a caller's question (shared with fact-line ranking).
STOP_WORDS = frozenset("""
a an the and or but if of to in on at for from by with about as is are was were be been being
do does did doing have has had i me my we our us you your it its they them their this that these
those there here what which who whom when where why how can could would should will shall may
might must any some much many more most no not yes so just than too very also only such up out
all each into um uh yeah hi hello please thanks thank like get got go going want need let tell
know okay ok well oh take""".split())
# Fillers, and contractions as ASR writes them without the apostrophe.
FILLERS = frozenset("""um uh uhm erm er hmm mm ah oh like yeah okay ok so well hi hello hey whats
wheres hows whos im ive dont doesnt cant theres""".split())

# phrase in the caller's words → words the documents use for it
SYNONYMS: dict[str, str] = {
    "address": "located location street",
    "where are you": "address located location area cover serve",
    "where is your office": "address located location",
    "located": "address location",
    "park": "parking garage lot",
    "cost": "price fee charge",
    "how much": "price fee cost",
    "charge": "price fee cost",
    "price": "cost fee",
    "open": "hours",
    "close": "hours closed",
    "hours": "open",
    "phone number": "call phone",
    "cheque": "check",
    "check": "cheque",
    "neuter": "castration spay neutering",
    "spay": "neuter neutering",
    "doctor": "dr vet dentist",
    "vet": "veterinarian dr",
    "lawyer": "attorney",
    "attorney": "lawyer",
    "pay": "payment accept",
    "card": "credit payment",
    "insurance": "insurer plan",
    "book": "appointment reservation",
    "reservation": "book booking table",
    "emergency": "urgent after-hours",
    "owner": "founder",
    "owns": "owner",
    "saturday": "weekend weekends",
    "sunday": "weekend weekends",
    "scared": "nervous anxious",
    "afraid": "nervous anxious",
    "boss": "owner manager",
}
_CONTRACTED = frozenset(f"{w}'s" for w in ("what", "where", "how", "who", "there", "it", "that"))
_PATTERNS = [(re.compile(rf"\b{re.escape(k)}\b"), v) for k, v in SYNONYMS.items()]


def normalise(text: str) -> str:
    """Lower case, no punctuation (apostrophes kept inside words), no fillers."""
    words = re.findall(r"[a-z0-9$]+(?:['’][a-z]+)?", text.lower())
    return " ".join(w for w in words if w not in FILLERS and w not in _CONTRACTED)


def expansions(text: str) -> list[tuple[str, str]]:
    """(caller's phrase, document words) for each paraphrase in the normalised ``text``."""
    query = normalise(text)
    return [(pattern.pattern[2:-2].replace("\\", ""), words)
            for pattern, words in _PATTERNS if pattern.search(query)]


def expand(text: str) -> str:
    """The normalised query plus the document words for any paraphrase in it."""
    return " ".join([normalise(text), *(words for _, words in expansions(text))])
