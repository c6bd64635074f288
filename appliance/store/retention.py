"""Retention: forget calls (transcripts, metrics, events, messages) older than N days.

Run by ``appliance calls purge`` and, when ``retention_days`` is set, once a day by the server,
on whichever call log is configured (SQLite or PostgreSQL); both then delete the purged calls'
recordings too (appliance/recordings). Calls still open are never purged, whatever their age.
A call's messages go with it: they hold the caller's words too, and a message left behind would
block its call's deletion (foreign key).
"""

from __future__ import annotations

import time

from appliance.store.reader import CallLogReader

DAY_S = 86400.0
OLD = "SELECT call_sid FROM calls WHERE started < ? AND ended IS NOT NULL"


async def purge_older_than(log: CallLogReader, days: float, now: float | None = None) -> int:
    """Delete ended calls that started more than ``days`` ago; returns how many."""
    return len(await purge_calls(log, days, now))


async def purge_calls(log: CallLogReader, days: float, now: float | None = None) -> list[str]:
    """Delete ended calls that started more than ``days`` ago; returns their sids (read before
    the delete: a call ending in between is kept by the delete's own ``ended`` check)."""
    if days <= 0:
        raise ValueError("days must be positive")
    cutoff = (now or time.time()) - days * DAY_S
    sids = [row["call_sid"] for row in await log.rows(OLD, [cutoff])]
    statements = [(f"DELETE FROM {table} WHERE call_sid IN ({OLD})", [cutoff])
                  for table in ("turn_metrics", "events", "messages", "turns")]
    await log.transaction(
        [*statements, ("DELETE FROM calls WHERE started < ? AND ended IS NOT NULL", [cutoff])])
    return sids
