"""Retention purge on a real call log, through the CLI verb."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.auth import Accounts, open_accounts_db
from appliance.store.calls import SqliteCallStore
from appliance.store.retention import DAY_S, purge_older_than


def seed(db_path: Path) -> None:
    async def write() -> None:
        store = SqliteCallStore(db_path)
        await store.open()
        for sid in ("CAold", "CAnew", "CAopen"):
            await store.call_started(sid, mode="media-streams")
            await store.add_turn(sid, idx=0, role="user", text="hello", started=time.time())
            await store.add_event(sid, "dtmf", digit="1")
        await store.call_ended("CAold", status="completed", reason="test")
        await store.call_ended("CAnew", status="completed", reason="test")
        await store.close()
    asyncio.run(write())
    db = open_accounts_db(db_path)
    old = time.time() - 40 * DAY_S
    db.execute("UPDATE calls SET started = ? WHERE call_sid IN ('CAold', 'CAopen')", [old])
    db.conn.close()


def test_purge_keeps_recent_and_open_calls(tmp_path: Path) -> None:
    seed(tmp_path / "calls.db")
    db = open_accounts_db(tmp_path / "calls.db")
    assert purge_older_than(db, 30) == 1
    assert [r[0] for r in db.execute("SELECT call_sid FROM calls ORDER BY call_sid")] == [
        "CAnew", "CAopen"]
    assert db.execute("SELECT count(*) FROM turns WHERE call_sid = 'CAold'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM events WHERE call_sid = 'CAold'").fetchone()[0] == 0
    with pytest.raises(ValueError):
        purge_older_than(db, 0)


def test_calls_purge_verb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed(data / "calls.db")
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data),
           "PYTHONPATH": str(Path(__file__).parents[2])}

    def purge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance", "calls", "purge", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    refused = purge()
    assert refused.returncode == 2 and "APPLIANCE_RETENTION_DAYS" in refused.stderr
    done = purge("--older-than-days", "30")
    assert done.returncode == 0 and "purged 1 call(s)" in done.stdout
    audit = Accounts(open_accounts_db(data / "calls.db")).audit_log()
    assert (audit[0]["actor"], audit[0]["action"]) == ("cli", "calls.purge")
