"""Answer or decline: is anything retrieved about what the caller asked?

The dense distance alone cannot tell "do you sell hearing aids" (near a dental services list)
from "where can I park" (near the parking section), and the old shared-word test declined
"what is your address" against "we are at 214 Pier Street". The decision uses both signals
the hybrid search returns: the best cosine distance, and the share of the question's words
(stemmed, paraphrases expanded) found in the documents. BM25 scores themselves did not
separate in from out of scope on the tuning businesses ("book me a flight" scored above
"what's your address"), the share of words did. A question is in scope when the embeddings
are confident on their own, or when most of its words are in the documents and the embeddings
are at least not far off. The thresholds are
settings, chosen on the tuning businesses of eval/ only (see README, "Evaluation").
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Settings
from appliance.engines.base import KbChunk


@dataclass(frozen=True, slots=True)
class Relevance:
    relevant: bool
    distance: float  # the best dense distance of the search
    coverage: float  # the share of the question's words found in the documents
    reason: str


def decide(chunks: list[KbChunk], settings: Settings) -> Relevance:
    """In scope when close in meaning, or when words match and meaning is not far off."""
    if not chunks:
        return Relevance(False, 1.0, 0.0, "nothing retrieved")
    meta = chunks[0].metadata
    distance = float(meta.get("best_distance", min(c.distance for c in chunks)))  # type: ignore[arg-type]
    coverage = float(meta.get("coverage", 0.0))  # type: ignore[arg-type]
    if distance <= settings.kb_max_distance:
        return Relevance(True, distance, coverage, "close in meaning")
    if coverage >= settings.kb_min_coverage and distance <= settings.kb_lexical_max_distance:
        return Relevance(True, distance, coverage, "its words are in the documents")
    return Relevance(False, distance, coverage,
                     f"best distance {distance:.2f}, {coverage:.0%} of its words found")
