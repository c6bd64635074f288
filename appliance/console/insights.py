"""Insights: how the calls went per day, and what callers asked that the knowledge base could
not answer, grouped by meaning so the owner writes one answer per topic.

The per-day numbers are computed here from plain rows (console/queries.py), so SQLite and
PostgreSQL give the same figures with no dialect's date or percentile functions: a day is the
server's local calendar day of the call's start (as the calls page's date filter), and the
percentiles are the benchmark's (linear interpolation, ``bench.stats.percentile``).

Grouping embeds each distinct question with the knowledge base's MiniLM model (in a worker
thread, never on the event loop) and merges clusters by average-linkage cosine similarity while
the closest pair is at least :data:`GROUP_THRESHOLD`. The threshold was chosen on the tuning
businesses only (eval/businesses dental and plumber: their 56 questions labelled by the fact
they ask for, plus two caller-style rewordings of each decline question, 84 in all), sweeping
pairwise F1 of "grouped together" against "same topic": 0.45 → 0.83, 0.50 → 0.91, 0.55 → 0.93
(precision 0.91, recall 0.95), 0.60 → 0.85, 0.70 → 0.75. Lower, different prices merge ("how
much is a crown" / "how much is an implant": 0.43); higher, rewordings split ("tell me a joke" /
"say something funny": 0.59). ``scripts/insights_threshold.py`` reproduces the sweep.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from appliance.bench.stats import percentile
from appliance.console import queries
from appliance.kb import KbError
from appliance.store.reader import CallLogReader

log = logging.getLogger(__name__)
GROUP_THRESHOLD = 0.55
MAX_QUESTIONS = 1000  # the newest distinct questions grouped; older ones are rarely acted on
EXAMPLES = 3
Embed = Callable[[list[str]], Sequence[Any]]  # texts → unit vectors (OnnxEmbedder)


# --- per day ----------------------------------------------------------------------------------

def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts).date()


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def per_day(calls: list[dict[str, Any]], v2v: list[dict[str, Any]], first: date,
            last: date) -> list[dict[str, Any]]:
    """One row per day from ``first`` to ``last`` (days without calls too, with nulls)."""
    days: dict[date, dict[str, Any]] = {}
    day = first
    while day <= last:
        days[day] = {"calls": 0, "durations": [], "v2v": [], "transferred": 0, "answers": 0,
                     "declines": 0}
        day += timedelta(days=1)
    for call in calls:
        if (bucket := days.get(_day(call["started"]))) is None:
            continue
        bucket["calls"] += 1
        if call["ended"] is not None:
            bucket["durations"].append(call["ended"] - call["started"])
        bucket["transferred"] += int(call["transferred"])
        bucket["answers"] += int(call["answers"])
        bucket["declines"] += int(call["declines"])
    for row in v2v:
        if (bucket := days.get(_day(row["started"]))) is not None:
            bucket["v2v"].append(float(row["v2v_s"]))
    out = []
    for day, b in days.items():
        durations, latencies = b["durations"], b["v2v"]
        out.append({
            "day": day.isoformat(), "calls": b["calls"],
            "duration_mean_s": _r(statistics.fmean(durations), 1) if durations else None,
            "duration_median_s": _r(statistics.median(durations), 1) if durations else None,
            "v2v_p50_s": _r(percentile(latencies, 50)) if latencies else None,
            "v2v_p95_s": _r(percentile(latencies, 95)) if latencies else None,
            "v2v_turns": len(latencies),
            "transfer_rate": _r(b["transferred"] / b["calls"]) if b["calls"] else None,
            "questions": b["answers"], "declined": b["declines"],
            "decline_rate": _r(b["declines"] / b["answers"]) if b["answers"] else None,
        })
    return out


# --- grouping ---------------------------------------------------------------------------------

def normalise(question: str) -> str:
    """Case and spacing do not make another question."""
    return " ".join(question.lower().split()).rstrip("?.! ")


def cluster(vectors: np.ndarray, threshold: float = GROUP_THRESHOLD) -> list[list[int]]:
    """Average-linkage agglomerative clustering of unit vectors by cosine similarity: merge the
    closest pair of clusters while their mean pairwise similarity is ``>= threshold``. Returns
    clusters of row indices, each sorted. Deterministic (ties: the lowest indices)."""
    n = len(vectors)
    if n == 0:
        return []
    sim = (vectors @ vectors.T).astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(members) > 1:
        flat = int(np.argmax(sim))
        a, b = divmod(flat, n)
        if sim[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        na, nb = len(members[a]), len(members[b])
        # Lance-Williams for average linkage: the merged cluster's mean similarity to each other
        merged = (na * sim[a] + nb * sim[b]) / (na + nb)
        sim[a], sim[:, a] = merged, merged
        sim[a, a] = -np.inf
        sim[b], sim[:, b] = -np.inf, -np.inf
        members[a] = sorted(members[a] + members.pop(b))
    return list(members.values())


class CachedEmbed:
    """Vectors of questions already seen, so a page view embeds only the new ones: 1000
    distinct questions took 1.75 s to embed and 0.4 s to cluster (2 cores under a load of 6,
    measured while other work ran); a repeat view pays only the clustering. Cleared when full."""

    def __init__(self, embed: Embed, limit: int = 4 * MAX_QUESTIONS) -> None:
        self._embed = embed
        self._limit = limit
        self._vectors: dict[str, Any] = {}

    def __call__(self, texts: list[str]) -> list[Any]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            if len(self._vectors) + len(missing) > self._limit:
                self._vectors.clear()
            self._vectors.update(zip(missing, self._embed(missing), strict=True))
        return [self._vectors[t] for t in texts]


@dataclass
class Asked:
    """One distinct question (normalised) and every time it was asked."""

    key: str
    phrasings: Counter[str] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)


def distinct(rows: list[dict[str, Any]]) -> list[Asked]:
    """Declined questions by normalised text, the newest last asked first (at most
    :data:`MAX_QUESTIONS`)."""
    by_key: dict[str, Asked] = {}
    for row in rows:
        text = " ".join(str(row["question"] or "").split())
        if not (key := normalise(text)):
            continue
        asked = by_key.setdefault(key, Asked(key))
        asked.phrasings[text] += 1
        asked.times.append(float(row["asked"]))
    newest = sorted(by_key.values(), key=lambda a: -max(a.times))
    return newest[:MAX_QUESTIONS]


def groups(asked: list[Asked], clusters: list[list[int]]) -> list[dict[str, Any]]:
    """The groups as shown: most asked first; the question is the commonest phrasing (the
    newest on a tie)."""
    out = []
    for members in clusters:
        phrasings: Counter[str] = Counter()
        times: list[float] = []
        for i in members:
            phrasings.update(asked[i].phrasings)
            times += asked[i].times
        examples = [text for text, _ in phrasings.most_common(EXAMPLES)]
        out.append({"question": examples[0], "count": len(times), "examples": examples,
                    "phrasings": len(phrasings), "last_asked": max(times)})
    return sorted(out, key=lambda g: (-g["count"], -g["last_asked"]))


def group_questions(rows: list[dict[str, Any]], embed: Embed | None,
                    threshold: float = GROUP_THRESHOLD) -> tuple[list[dict[str, Any]], str]:
    """Blocking: embed and cluster; returns the groups and how they were made. Without a
    working embedder (model files missing or unreadable), identical questions still group."""
    asked = distinct(rows)
    if embed is not None and asked:
        try:
            vectors = np.asarray(embed([a.key for a in asked]), dtype=np.float32)
        except KbError as err:
            log.warning("insights: questions grouped by exact text only: %s", err)
        else:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            return groups(asked, cluster(vectors, threshold)), "meaning"
    return groups(asked, [[i] for i in range(len(asked))]), "exact text"


# --- the page's data --------------------------------------------------------------------------

async def insights(call_log: CallLogReader, embed: Embed | None, days: int,
                   today: date | None = None) -> dict[str, Any]:
    """Per-day numbers for the last ``days`` days (today included) and the unanswered groups."""
    last = today or date.today()
    first = last - timedelta(days=days - 1)
    since = queries.day_start(first)
    calls = await queries.calls_since(call_log, since)
    v2v = await queries.v2v_since(call_log, since)
    declined = await queries.declined_questions(call_log, since)
    unanswered, grouping = await asyncio.to_thread(group_questions, declined, embed)
    return {"from": first.isoformat(), "to": last.isoformat(),
            "days": per_day(calls, v2v, first, last), "unanswered": unanswered,
            "grouping": grouping, "threshold": GROUP_THRESHOLD}
