"""Dense and lexical search fused: meaning from the embeddings, exact words from BM25.

MiniLM embeddings put "where can I park" near the parking section, but they also put "do you
sell hearing aids" near a dental services list, and a word the model never saw (a drug name, a
street) counts for little. BM25 over Snowball stems matches "park" to "parking" and rare words
strongly. The two rankings are joined with reciprocal-rank fusion (no score scales to
reconcile), and each chunk carries both scores so the relevance decision can use them.

The lexical index is built from the Chroma collection when the knowledge base opens; documents
ingested later by another process are seen after a restart, as with Chroma's own index.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import replace

import bm25s
import Stemmer

from appliance.engines.base import EngineInfo, KbChunk, KnowledgeBase
from appliance.kb.query import STOP_WORDS, expand, expansions, normalise

RRF_K = 60  # the constant of Cormack et al.; rankings here are short, so it hardly matters
DENSE_POOL = 20  # dense candidates fused; a business's documents rarely have more chunks


class LexicalIndex:
    """BM25 over stemmed words of each chunk's heading path and text."""

    def __init__(self, chunks: list[KbChunk]) -> None:
        self.chunks = chunks
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = threading.Lock()  # the stemmer object is not documented as thread-safe
        self._index = bm25s.BM25()
        corpus = self._tokens([f"{c.heading}\n{c.text}" for c in chunks])
        self._df = Counter(word for tokens in corpus for word in set(tokens))
        if chunks:
            self._index.index(corpus, show_progress=False)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        with self._lock:
            out = bm25s.tokenize(texts, stopwords=list(STOP_WORDS), stemmer=self._stemmer,
                                 return_ids=False, show_progress=False)
        return [list(tokens) for tokens in out]

    def coverage(self, query: str) -> float:
        """The share of the question's words (stemmed) found in the documents, rare ones
        counting more.

        A word counts as found when a paraphrase of it is found ("address" in a question, "we
        are located at" in the text). "Do you sell electric toothbrushes" finds none of
        "sell", "electric", "toothbrush" in a dental practice's documents: out of scope,
        however close its embedding lands to the services list. Each word weighs its inverse
        document frequency, an unknown word the most: in "can you recommend a good pizza
        place" the dental documents have "recommend" and "place", but not "pizza".
        """
        words = set(self._tokens([normalise(query)])[0])
        if not words or not self.chunks:
            return 0.0
        found = {w for w in words if self._df[w]}
        for phrase, synonyms in expansions(query):
            if any(self._df[w] for w in self._tokens([synonyms])[0]):
                found |= set(self._tokens([phrase])[0])
        weight = {w: math.log(1 + len(self.chunks) / (self._df[w] + 0.5)) for w in words}
        return sum(weight[w] for w in found & words) / sum(weight.values())

    def scores(self, query: str) -> list[float]:
        """One BM25 score per chunk, in index order (0 where no query word occurs)."""
        if not self.chunks:
            return []
        tokens = self._tokens([query])[0]
        if not tokens:
            return [0.0] * len(self.chunks)
        return [float(s) for s in self._index.get_scores(tokens)]


class HybridKnowledgeBase:
    """``KnowledgeBase`` that fuses a dense one with a BM25 index over the same chunks.

    Returned chunks keep the dense cosine ``distance`` (1.0 when the dense search did not
    return them) and gain ``metadata["bm25"]`` (the chunk's lexical score) and
    ``metadata["rrf"]`` (the fused score they are ordered by).
    """

    def __init__(self, dense: KnowledgeBase, chunks: list[KbChunk]) -> None:
        self.dense = dense
        self.lexical = LexicalIndex(chunks)
        self.info = EngineInfo(slot="kb", name=f"hybrid bm25s+{dense.info.name}",
                               version=f"bm25s {bm25s.__version__}", path=dense.info.path)

    def search(self, query: str, k: int) -> list[KbChunk]:
        text = normalise(query)
        if k <= 0 or not text:
            return []
        dense = self.dense.search(text, max(k, DENSE_POOL))
        lexical = self.lexical.scores(expand(query))
        by_id = {c.id: c for c in self.lexical.chunks}
        fused: dict[str, float] = {}
        for rank, chunk in enumerate(dense):
            fused[chunk.id] = 1 / (RRF_K + rank + 1)
        order = sorted(range(len(lexical)), key=lambda i: -lexical[i])
        for rank, i in enumerate(j for j in order if lexical[j] > 0):
            chunk_id = self.lexical.chunks[i].id
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1 / (RRF_K + rank + 1)
        bm25 = {c.id: s for c, s in zip(self.lexical.chunks, lexical, strict=True)}
        found = {c.id: c for c in dense}
        best = sorted(fused, key=lambda cid: -fused[cid])[:k]
        out = []
        for chunk_id in best:
            chunk = found.get(chunk_id) or replace(by_id[chunk_id], distance=1.0)
            meta = {**chunk.metadata, "bm25": bm25.get(chunk_id, 0.0), "rrf": fused[chunk_id],
                    "best_distance": dense[0].distance if dense else 1.0,
                    "best_bm25": max(lexical, default=0.0),
                    "coverage": self.lexical.coverage(query)}
            out.append(replace(chunk, metadata=meta))
        return out
