"""Answer or decline: is anything retrieved about what the caller asked?

The dense distance alone cannot tell "do you sell hearing aids" (near a dental services list)
from "where can I park" (near the parking section), and the old shared-word test declined
"what is your address" against "we are at 214 Pier Street". The decision uses both signals
the hybrid search returns: the best cosine distance and the best BM25 score (stemmed words,
paraphrases expanded). A question is in scope when the embeddings are confident on their own,
or when the words match and the embeddings are at least not far off. The thresholds are
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
    bm25: float  # the best lexical score of the search
    reason: str


def decide(chunks: list[KbChunk], settings: Settings) -> Relevance:
    """In scope when close in meaning, or when words match and meaning is not far off."""
    if not chunks:
        return Relevance(False, 1.0, 0.0, "nothing retrieved")
    meta = chunks[0].metadata
    distance = float(meta.get("best_distance", min(c.distance for c in chunks)))  # type: ignore[arg-type]
    bm25 = float(meta.get("best_bm25", 0.0))  # type: ignore[arg-type]
    if distance <= settings.kb_max_distance:
        return Relevance(True, distance, bm25, "close in meaning")
    if bm25 >= settings.kb_min_bm25 and distance <= settings.kb_lexical_max_distance:
        return Relevance(True, distance, bm25, "words match")
    return Relevance(False, distance, bm25,
                     f"best distance {distance:.2f}, best word score {bm25:.2f}")
