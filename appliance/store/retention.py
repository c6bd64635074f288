"""Retention: forget calls (transcripts, metrics, events) older than N days.

Run by ``appliance calls purge`` and, when ``retention_days`` is set, once a day by the server,
which then delete the purged calls' recordings too (appliance/recordings).
Calls still open are never purged, whatever their age.
"""

from __future__ import annotations

import time

import sqlite_utils

DAY_S = 86400.0


def purge_older_than(db: sqlite_utils.Database, days: float, now: float | None = None) -> int:
    """Delete ended calls that started more than ``days`` ago; returns how many."""
    return len(purge_calls(db, days, now))


def purge_calls(db: sqlite_utils.Database, days: float, now: float | None = None) -> list[str]:
    """Delete ended calls that started more than ``days`` ago; returns their sids."""
    if days <= 0:
        raise ValueError("days must be positive")
    cutoff = (now or time.time()) - days * DAY_S
    old = "SELECT call_sid FROM calls WHERE started < ? AND ended IS NOT NULL"
    with db.conn:
        sids = [row[0] for row in db.execute(old, [cutoff])]
        for table in ("turn_metrics", "events", "turns"):
            db.execute(f"DELETE FROM {table} WHERE call_sid IN ({old})", [cutoff])
        db.execute("DELETE FROM calls WHERE started < ? AND ended IS NOT NULL", [cutoff])
    return sids
