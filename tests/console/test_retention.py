"""Retention purge on a real call log, on both back ends, and through the CLI verb."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.auth import Accounts, open_accounts_db
from appliance.config import Settings
from appliance.store.postgres import call_store
from appliance.store.reader import call_log_reader
from appliance.store.retention import DAY_S, purge_older_than


def seed(settings: Settings) -> None:
    async def write() -> None:
        store = call_store(settings)
        await store.open()
        for sid in ("CAold", "CAnew", "CAopen"):
            await store.call_started(sid, mode="media-streams")
            await store.add_turn(sid, idx=0, role="user", text="hello", started=time.time())
            await store.add_event(sid, "dtmf", digit="1")
        await store.add_message("CAold", name="Ann", callback_number="+1", message="call me")
        await store.call_ended("CAold", status="completed", reason="test")
        await store.call_ended("CAnew", status="completed", reason="test")
        await store.close()
        log = call_log_reader(settings)
        await log.open()
        await log.transaction([("UPDATE calls SET started = ? WHERE call_sid IN "
                                "('CAold', 'CAopen')", [time.time() - 40 * DAY_S])])
        await log.close()
    asyncio.run(write())


def test_purge_keeps_recent_and_open_calls(log_settings: Settings) -> None:
    seed(log_settings)

    async def purge() -> tuple[int, list[str], int, int]:
        log = call_log_reader(log_settings)
        await log.open()
        try:
            with pytest.raises(ValueError):
                await purge_older_than(log, 0)
            count = await purge_older_than(log, 30)
            left = [r["call_sid"] for r in
                    await log.rows("SELECT call_sid FROM calls ORDER BY call_sid")]
            turns = await log.value("SELECT count(*) FROM turns WHERE call_sid = 'CAold'")
            events = await log.value("SELECT count(*) FROM events WHERE call_sid = 'CAold'")
            return count, left, int(turns), int(events)
        finally:
            await log.close()

    assert asyncio.run(purge()) == (1, ["CAnew", "CAopen"], 0, 0)


def test_calls_purge_verb(log_settings: Settings) -> None:
    seed(log_settings)
    env = {**os.environ, "APPLIANCE_DATA_DIR": log_settings.data_dir,
           "APPLIANCE_DATABASE_URL": log_settings.database_url,
           "PYTHONPATH": str(Path(__file__).parents[2])}

    def purge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance", "calls", "purge", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    refused = purge()
    assert refused.returncode == 2 and "APPLIANCE_RETENTION_DAYS" in refused.stderr
    done = purge("--older-than-days", "30")
    assert done.returncode == 0 and "purged 1 call(s)" in done.stdout, done.stderr
    assert "purged 0 call(s)" in purge("--older-than-days", "30").stdout
    audit = Accounts(open_accounts_db(log_settings.db_path)).audit_log()
    assert (audit[0]["actor"], audit[0]["action"]) == ("cli", "calls.purge")
