"""Read-only queries over the call log for the console and its JSON API.

Plain SQL on a connection of our own (WAL lets it read while the call log writes). The search
filters are what an operator asks of a day's calls: a number, a date range, words said, and
what went wrong or differently (transferred, declined, errors, abandoned, barge-ins).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlite_utils

# The first words of Agent.unknown_answer: a turn that says them declined to answer.
DECLINED_PREFIX = "I'm sorry, I don't have that information"

FLAGS: dict[str, str] = {
    "transferred": "EXISTS (SELECT 1 FROM events e WHERE e.call_sid = c.call_sid AND "
                   "((e.type = 'tool' AND e.detail LIKE '%transfer%') OR "
                   "(e.type = 'relay_ended' AND e.detail LIKE '%transfer%')))",
    "declined": "EXISTS (SELECT 1 FROM turns t WHERE t.call_sid = c.call_sid AND "
                f"t.role = 'assistant' AND t.text LIKE '{DECLINED_PREFIX}%')",
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
            params.append(_ts(self.date_from))
        if self.date_to:
            clauses.append("c.started < ?")
            params.append(_ts(self.date_to + timedelta(days=1)))
        if self.words:
            clauses.append("EXISTS (SELECT 1 FROM turns t WHERE t.call_sid = c.call_sid AND "
                           "(t.text LIKE ? OR t.heard_text LIKE ?))")
            params += [f"%{self.words}%"] * 2
        for flag in self.flags:
            if flag not in FLAGS:
                raise ValueError(f"unknown filter {flag!r}: use {', '.join(FLAGS)}")
            clauses.append(FLAGS[flag])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _ts(day: date) -> float:
    return datetime(day.year, day.month, day.day).timestamp()


SUMMARY_SQL = """
SELECT c.call_sid, c.from_number, c.to_number, c.mode, c.started, c.ended, c.status,
       c.end_reason,
       CASE WHEN c.ended IS NOT NULL THEN round(c.ended - c.started, 1) END AS duration_s,
       (SELECT count(*) FROM turns t WHERE t.call_sid = c.call_sid) AS turns,
       (SELECT round(avg(m.v2v_s), 3) FROM turn_metrics m WHERE m.call_sid = c.call_sid)
           AS v2v_mean_s
FROM calls c"""


def search_calls(db: sqlite_utils.Database, f: CallFilter) -> dict[str, Any]:
    """One page of calls, newest first, and the total matching."""
    where, params = f.where()
    total = db.execute(f"SELECT count(*) FROM calls c{where}", params).fetchone()[0]
    rows = _dicts(db.execute(f"{SUMMARY_SQL}{where} ORDER BY c.started DESC LIMIT ? OFFSET ?",
                             [*params, f.per_page, (f.page - 1) * f.per_page]))
    pages = max(1, -(-total // f.per_page))
    return {"calls": rows, "total": total, "page": f.page, "pages": pages,
            "per_page": f.per_page}


def calls_csv(db: sqlite_utils.Database, f: CallFilter) -> str:
    """Every matching call (no paging) as CSV, for spreadsheets and CRMs."""
    where, params = f.where()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in _dicts(db.execute(f"{SUMMARY_SQL}{where} ORDER BY c.started DESC", params)):
        row["v2v_p50_s"] = row.pop("v2v_mean_s")
        writer.writerow([_iso(row[k]) if k in ("started", "ended") else row[k]
                         for k in CSV_COLUMNS])
    return out.getvalue()


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else ""


def call_detail(db: sqlite_utils.Database, call_sid: str) -> dict[str, Any] | None:
    """The call, its turns with metrics and sources, and its events."""
    calls = _dicts(db.execute(f"{SUMMARY_SQL} WHERE c.call_sid = ?", [call_sid]))
    if not calls:
        return None
    metrics = {m["turn_id"]: m for m in
               _dicts(db.execute("SELECT * FROM turn_metrics WHERE call_sid = ?", [call_sid]))}
    turns = []
    for turn in _dicts(db.execute("SELECT * FROM turns WHERE call_sid = ? ORDER BY id",
                                  [call_sid])):
        turn["interrupted"] = bool(turn["interrupted"])
        turn["sources"] = [{"id": str(i)} for i in json.loads(turn.pop("kb_chunks") or "[]")]
        metric = metrics.get(turn["id"])
        if metric and metric.get("tts_sentences"):
            metric["tts_sentences"] = json.loads(metric["tts_sentences"])
        turn["metrics"] = metric
        turns.append(turn)
    events = [dict(e, detail=json.loads(e["detail"] or "{}")) for e in
              _dicts(db.execute("SELECT * FROM events WHERE call_sid = ? ORDER BY id",
                                [call_sid]))]
    return {"call": calls[0], "turns": turns, "events": events}


def live_turns(db: sqlite_utils.Database, call_sids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The transcript so far of each call in progress."""
    out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in call_sids}
    if not call_sids:
        return out
    marks = ",".join("?" * len(call_sids))
    for row in _dicts(db.execute(
            f"SELECT call_sid, role, text, heard_text, interrupted FROM turns "
            f"WHERE call_sid IN ({marks}) ORDER BY id", call_sids)):
        out[row.pop("call_sid")].append(row)
    return out


def calls_info(db: sqlite_utils.Database, call_sids: list[str]) -> dict[str, dict[str, Any]]:
    if not call_sids:
        return {}
    marks = ",".join("?" * len(call_sids))
    return {r["call_sid"]: r for r in _dicts(db.execute(
        f"SELECT call_sid, from_number, started, mode FROM calls WHERE call_sid IN ({marks})",
        call_sids))}


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
