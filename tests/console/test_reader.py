"""The console's one read interface over the call log, on both back ends: the same SQL (``?``
placeholders, ``%`` in patterns), all-or-nothing transactions, and PostgreSQL's reconnect."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from appliance.config import Settings
from appliance.store.postgres import call_store
from appliance.store.reader import PostgresReader, call_log_reader, pg_sql


def test_placeholders_and_percent_signs_for_psycopg() -> None:
    assert pg_sql("SELECT 1 WHERE a LIKE '%x%' AND b = ?") == \
        "SELECT 1 WHERE a LIKE '%%x%%' AND b = %s"


def test_same_sql_and_atomic_transactions_on_both_back_ends(log_settings: Settings) -> None:
    async def run() -> tuple[list[dict], int, list[str]]:
        store = call_store(log_settings)
        await store.open()
        await store.call_started("CA1", mode="media-streams", from_number="+15550001")
        await store.call_started("CA2", mode="relay", from_number="+15550002")
        await store.close()
        log = call_log_reader(log_settings)
        await log.open()
        try:
            rows = await log.rows("SELECT call_sid, mode FROM calls WHERE from_number LIKE "
                                  "'%0001' OR mode = ? ORDER BY call_sid", ["relay"])
            count = await log.value("SELECT count(*) FROM calls")
            with pytest.raises(Exception):  # noqa: B017 - sqlite3 and psycopg errors differ
                await log.transaction([("DELETE FROM calls WHERE call_sid = ?", ["CA1"]),
                                       ("DELETE FROM no_such_table", [])])
            left = [r["call_sid"] for r in await log.rows("SELECT call_sid FROM calls "
                                                          "ORDER BY call_sid")]
            return rows, int(count), left
        finally:
            await log.close()

    rows, count, left = asyncio.run(run())
    assert rows == [{"call_sid": "CA1", "mode": "media-streams"},
                    {"call_sid": "CA2", "mode": "relay"}]
    assert count == 2 and left == ["CA1", "CA2"]  # the failed transaction deleted nothing


def test_postgres_reader_reconnects_once_the_server_dropped_it(postgres_url: str) -> None:
    async def run() -> int:
        log = PostgresReader(postgres_url)
        await log.open()
        try:
            pid = (await log.rows("SELECT pg_backend_pid() AS pid"))[0]["pid"]
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            return int(await log.value("SELECT count(*) FROM calls"))
        finally:
            await log.close()

    assert asyncio.run(run()) == 0
