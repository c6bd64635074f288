"""Read-only queries over the call log for the console and its JSON API.

Written once for both back ends through :class:`appliance.store.reader.CallLogReader` (portable
SQL, ``?`` placeholders); rounding and JSON decoding happen here in Python, where SQLite and
PostgreSQL cannot disagree. The search filters are what an operator asks of a day's calls: a
number, a date range, words said, and what went wrong or differently (transferred, declined,
errors, abandoned, barge-ins).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from appliance.store.reader import CallLogReader

# The first words of Agent.unknown_answer: a turn that says them declined to answer.
DECLINED_PREFIX = "I'm sorry, I don't have that information"
DECLINED_LIKE = DECLINED_PREFIX.replace("'", "''") + "%"  # an SQL literal, quotes doubled
DECLINED_TURN = f"t.role = 'assistant' AND t.text LIKE '{DECLINED_LIKE}'"
TRANSFERRED = ("EXISTS (SELECT 1 FROM events e WHERE e.call_sid = c.call_sid AND "
               "((e.type = 'tool' AND e.detail LIKE '%transfer%') OR "
               "(e.type = 'relay_ended' AND e.detail LIKE '%transfer%')))")

FLAGS: dict[str, str] = {
    "transferred": TRANSFERRED,
    "declined": f"EXISTS (SELECT 1 FROM turns t WHERE t.call_sid = c.call_sid AND "
                f"{DECLINED_TURN})",
    "errors": "(c.status = 'failed' OR EXISTS (SELECT 1 FROM events e WHERE "
              "e.call_sid = c.call_sid AND e.type = 'error'))",
    "abandoned": "c.status = 'abandoned'",
    "barge_ins": "EXISTS (SELECT 1 FROM events e WHERE e.call_sid = c.call_sid AND "
                 "e.type IN ('barge-in', 'interrupt'))",
}
CSV_COLUMNS = ("call_sid", "from_number", "to_number", "mode", "started", "ended",
               "duration_s", "status", "end_reason", "turns", "v2v_p50_s")


@dataclass(frozen=True, slots=True)
class CallFilter:
    number: str = ""
    date_from: date | None = None
    date_to: date | None = None
    words: str = ""
    flags: tuple[str, ...] = ()
    page: int = 1
    per_page: int = 25

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.number:
            clauses.append("(c.from_number LIKE ? OR c.to_number LIKE ?)")
            params += [f"%{self.number}%"] * 2
        if self.date_from:
            clauses.append("c.started >= ?")
            params.append(day_start(self.date_from))
        if self.date_to:
            clauses.append("c.started < ?")
            params.append(day_start(self.date_to + timedelta(days=1)))
        if self.words:
            clauses.append("EXISTS (SELECT 1 FROM turns t WHERE t.call_sid = c.call_sid AND "
                           "(lower(t.text) LIKE ? OR lower(t.heard_text) LIKE ?))")
            params += [f"%{self.words.lower()}%"] * 2
        for flag in self.flags:
            if flag not in FLAGS:
                raise ValueError(f"unknown filter {flag!r}: use {', '.join(FLAGS)}")
            clauses.append(FLAGS[flag])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def day_start(day: date) -> float:
    """The local midnight starting ``day``, as the call log's epoch seconds."""
    return datetime(day.year, day.month, day.day).timestamp()


SUMMARY_SQL = """
SELECT c.call_sid, c.from_number, c.to_number, c.mode, c.started, c.ended, c.status,
       c.end_reason,
       (SELECT count(*) FROM turns t WHERE t.call_sid = c.call_sid) AS turns,
       (SELECT avg(m.v2v_s) FROM turn_metrics m WHERE m.call_sid = c.call_sid) AS v2v_mean_s
FROM calls c"""


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    ended, v2v = row["ended"], row["v2v_mean_s"]
    return {**row, "duration_s": round(ended - row["started"], 1) if ended is not None else None,
            "turns": int(row["turns"]), "v2v_mean_s": round(v2v, 3) if v2v is not None else None}


async def search_calls(log: CallLogReader, f: CallFilter) -> dict[str, Any]:
    """One page of calls, newest first, and the total matching."""
    where, params = f.where()
    total = int(await log.value(f"SELECT count(*) FROM calls c{where}", params))
    rows = await log.rows(f"{SUMMARY_SQL}{where} ORDER BY c.started DESC LIMIT ? OFFSET ?",
                          [*params, f.per_page, (f.page - 1) * f.per_page])
    pages = max(1, -(-total // f.per_page))
    return {"calls": [_summary(r) for r in rows], "total": total, "page": f.page,
            "pages": pages, "per_page": f.per_page}


async def calls_csv(log: CallLogReader, f: CallFilter) -> str:
    """Every matching call (no paging) as CSV, for spreadsheets and CRMs."""
    where, params = f.where()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in await log.rows(f"{SUMMARY_SQL}{where} ORDER BY c.started DESC", params):
        row = _summary(row)
        row["v2v_p50_s"] = row.pop("v2v_mean_s")
        writer.writerow([_iso(row[k]) if k in ("started", "ended") else row[k]
                         for k in CSV_COLUMNS])
    return out.getvalue()


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else ""


async def call_detail(log: CallLogReader, call_sid: str) -> dict[str, Any] | None:
    """The call, its turns with metrics and sources, and its events."""
    calls = await log.rows(f"{SUMMARY_SQL} WHERE c.call_sid = ?", [call_sid])
    if not calls:
        return None
    metrics = {m["turn_id"]: m for m in
               await log.rows("SELECT * FROM turn_metrics WHERE call_sid = ?", [call_sid])}
    turns = []
    for turn in await log.rows("SELECT * FROM turns WHERE call_sid = ? ORDER BY id", [call_sid]):
        turn["interrupted"] = bool(turn["interrupted"])
        turn["sources"] = [{"id": str(i)} for i in json.loads(turn.pop("kb_chunks") or "[]")]
        metric = metrics.get(turn["id"])
        if metric and metric.get("tts_sentences"):
            metric["tts_sentences"] = json.loads(metric["tts_sentences"])
        turn["metrics"] = metric
        turns.append(turn)
    events = [dict(e, detail=json.loads(e["detail"] or "{}")) for e in
              await log.rows("SELECT * FROM events WHERE call_sid = ? ORDER BY id", [call_sid])]
    return {"call": _summary(calls[0]), "turns": turns, "events": events}


def _marks(values: list[str]) -> str:
    return ",".join("?" * len(values))


async def live_turns(log: CallLogReader, call_sids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The transcript so far of each call in progress."""
    out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in call_sids}
    if not call_sids:
        return out
    for row in await log.rows(
            f"SELECT call_sid, role, text, heard_text, interrupted FROM turns "
            f"WHERE call_sid IN ({_marks(call_sids)}) ORDER BY id", call_sids):
        out[row.pop("call_sid")].append(row)
    return out


async def calls_info(log: CallLogReader, call_sids: list[str]) -> dict[str, dict[str, Any]]:
    if not call_sids:
        return {}
    return {r["call_sid"]: r for r in await log.rows(
        f"SELECT call_sid, from_number, started, mode FROM calls "
        f"WHERE call_sid IN ({_marks(call_sids)})", call_sids)}


# --- insights: the raw rows; console/insights.py does the arithmetic --------------------------

async def calls_since(log: CallLogReader, since: float) -> list[dict[str, Any]]:
    """Each call since ``since``: when, how long, transferred, questions answered/declined."""
    return await log.rows(
        "SELECT c.started, c.ended, c.status, "
        f"CASE WHEN {TRANSFERRED} THEN 1 ELSE 0 END AS transferred, "
        "(SELECT count(*) FROM turns t WHERE t.call_sid = c.call_sid AND "
        "t.role = 'assistant' AND t.idx > 0) AS answers, "
        f"(SELECT count(*) FROM turns t WHERE t.call_sid = c.call_sid AND {DECLINED_TURN} "
        "AND t.idx > 0) AS declines "
        "FROM calls c WHERE c.started >= ? ORDER BY c.started", [since])


async def v2v_since(log: CallLogReader, since: float) -> list[dict[str, Any]]:
    """Every measured voice-to-voice latency, with its call's start."""
    return await log.rows(
        "SELECT c.started, m.v2v_s FROM turn_metrics m JOIN calls c ON c.call_sid = m.call_sid "
        "WHERE c.started >= ? AND m.v2v_s IS NOT NULL", [since])


async def declined_questions(log: CallLogReader, since: float) -> list[dict[str, Any]]:
    """What the caller said each time the agent declined (the user turn its reply answered)."""
    return await log.rows(
        "SELECT u.text AS question, u.started AS asked, u.call_sid FROM turns t "
        "JOIN turns u ON u.call_sid = t.call_sid AND u.idx = t.idx AND u.role = 'user' "
        "JOIN calls c ON c.call_sid = t.call_sid "
        f"WHERE {DECLINED_TURN} AND c.started >= ? ORDER BY u.started", [since])
