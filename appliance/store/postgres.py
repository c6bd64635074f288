"""The call log on PostgreSQL, for several boxes sharing one log (psycopg 3, async).

Same tables, columns and public methods as the SQLite ``SqliteCallStore`` (both implement
``engines.base.CallStore``), so the web layer and the console use either unchanged;
``call_store`` picks one from the settings. Postgres adds one column, ``calls.box`` (the box
that answered the webhook, then the one holding the stream): on start-up a box marks as
abandoned only the open calls *it* owned, never the live calls of the boxes beside it. Like the
SQLite store, a failing write is logged and survived, never raised into a call; a connection
the server dropped is reopened once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from appliance.box import box_name
from appliance.config import Settings
from appliance.store.calls import AssistantTurns, SqliteCallStore
from appliance.store.metrics import TurnMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# Versioned migrations, applied in order and recorded in ``schema_version``; append, never edit.
# Versions 1 and 2 match store/schema.py's SQLite steps; 5 matches its _v5 (retrieval_s), 6 its
# _v4 index on calls.started, 7 its _v6 (recordings), 8 its _v7 (speculative), 9 its _v8 (prompt).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE calls (
        call_sid TEXT PRIMARY KEY, stream_sid TEXT, mode TEXT, from_number TEXT, to_number TEXT,
        started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION, status TEXT NOT NULL,
        end_reason TEXT);
    CREATE TABLE turns (
        id BIGSERIAL PRIMARY KEY, call_sid TEXT REFERENCES calls (call_sid), idx INTEGER,
        role TEXT, text TEXT, heard_text TEXT, started DOUBLE PRECISION, ended DOUBLE PRECISION,
        interrupted INTEGER, kb_chunks TEXT);
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY, call_sid TEXT REFERENCES calls (call_sid),
        at DOUBLE PRECISION, type TEXT, detail TEXT);
    CREATE TABLE turn_metrics (
        turn_id BIGINT PRIMARY KEY REFERENCES turns (id), call_sid TEXT REFERENCES calls (call_sid),
        endpoint_s DOUBLE PRECISION, stt_s DOUBLE PRECISION, llm_ttft_s DOUBLE PRECISION,
        first_sentence_s DOUBLE PRECISION, tts_first_audio_s DOUBLE PRECISION,
        v2v_s DOUBLE PRECISION, first_token_sent_s DOUBLE PRECISION, tts_provider TEXT);
    CREATE INDEX turns_call_sid ON turns (call_sid);
    CREATE INDEX events_call_sid ON events (call_sid);
    CREATE INDEX calls_status ON calls (status);
    """,
    "ALTER TABLE turn_metrics ADD COLUMN tts_sentences TEXT",
    """
    ALTER TABLE calls ADD COLUMN box TEXT;
    CREATE INDEX calls_open_by_box ON calls (box) WHERE ended IS NULL;
    """,
    """
    CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY, call_sid TEXT REFERENCES calls (call_sid),
        at DOUBLE PRECISION, name TEXT, callback_number TEXT, message TEXT,
        delivered INTEGER, delivery_error TEXT);
    CREATE INDEX messages_call_sid ON messages (call_sid);
    """,
    "ALTER TABLE turn_metrics ADD COLUMN retrieval_s DOUBLE PRECISION",
    # The console lists calls newest first and filters them by date, as SQLite's _v4 index
    "CREATE INDEX calls_started ON calls (started)",
    """
    ALTER TABLE calls ADD COLUMN recording TEXT;
    ALTER TABLE calls ADD COLUMN recording_s DOUBLE PRECISION;
    """,
    "ALTER TABLE turn_metrics ADD COLUMN speculative INTEGER",
    """
    ALTER TABLE turn_metrics ADD COLUMN prompt_tokens INTEGER;
    ALTER TABLE turn_metrics ADD COLUMN prompt_reused INTEGER;
    ALTER TABLE turn_metrics ADD COLUMN prompt_evaluated INTEGER;
    ALTER TABLE turn_metrics ADD COLUMN prompt_eval_s DOUBLE PRECISION;
    ALTER TABLE turn_metrics ADD COLUMN prompt_threads INTEGER;
    """,
]
MIGRATION_LOCK = 0x61707031  # pg_advisory_xact_lock key: boxes starting together migrate once


class PostgresCallStore(AssistantTurns):
    """The PostgreSQL call log. Open with :meth:`open`; all public methods are coroutines."""

    def __init__(self, url: str, box: str) -> None:
        self.url = url
        self.box = box
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def open(self) -> int:
        """Connect, migrate, and mark calls this box left open in a crash as abandoned."""
        await self._connect()
        await migrate(self.conn)
        cursor = await self.conn.execute(
            "UPDATE calls SET status='abandoned', end_reason='server restarted', ended=%s "
            "WHERE ended IS NULL AND box = %s", [time.time(), self.box])
        if cursor.rowcount:
            log.warning("marked %d call(s) left open by a crash as abandoned", cursor.rowcount)
        return cursor.rowcount

    async def _connect(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                           row_factory=dict_row)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None:
            raise RuntimeError("PostgresCallStore is not open")
        return self._conn

    async def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``; if the server dropped the connection, reconnect and run it once more."""
        if self._conn is not None and self._conn.closed:
            await self._connect()
        try:
            return await fn()
        except psycopg.OperationalError:
            if self._conn is None or not self._conn.closed:
                raise
            await self._connect()
            return await fn()

    async def _write(self, what: str, fn: Callable[[], Awaitable[T]]) -> T | None:
        """Run a write; a failing database is logged and survived, never raised into a call."""
        try:
            return await self._run(fn)
        except (psycopg.Error, OSError) as err:
            log.error("call log write failed (%s): %s", what, err)
            return None

    async def _exec(self, query: str | sql.Composed, params: list[Any] | None = None) -> Any:
        return await self.conn.execute(query, params)

    # --- writes -----------------------------------------------------------------------------

    async def call_started(self, call_sid: str, *, mode: str, from_number: str = "",
                           to_number: str = "", status: str = "ringing") -> None:
        await self._write("call start", lambda: self._exec(
            "INSERT INTO calls (call_sid, mode, from_number, to_number, started, status, box) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (call_sid) DO NOTHING",
            [call_sid, mode, from_number, to_number, time.time(), status, self.box]))

    async def update_call(self, call_sid: str, **fields: Any) -> None:
        """Update known columns of a call, creating the row if Twilio told us of it first."""
        async def write() -> None:
            await self._exec(
                "INSERT INTO calls (call_sid, started, status, mode, box) "
                "VALUES (%s, %s, 'unknown', '', %s) ON CONFLICT (call_sid) DO NOTHING",
                [call_sid, time.time(), self.box])
            values = dict(fields)
            if "stream_sid" in values:  # the box holding the stream owns the call from now on
                values["box"] = self.box
            if values:
                sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(name))
                                          for name in values)
                await self._exec(sql.SQL("UPDATE calls SET {} WHERE call_sid = %s").format(sets),
                                 [*values.values(), call_sid])
        await self._write("call update", write)

    async def call_ended(self, call_sid: str, *, status: str, reason: str) -> None:
        await self._write("call end", lambda: self._exec(
            "UPDATE calls SET ended=%s, status=%s, end_reason=%s "
            "WHERE call_sid=%s AND ended IS NULL", [time.time(), status, reason, call_sid]))

    async def add_turn(self, call_sid: str, *, idx: int, role: str, text: str,
                       started: float, ended: float | None = None, heard_text: str | None = None,
                       interrupted: bool = False, kb_chunks: list[str] | None = None) -> int | None:
        async def write() -> int:
            cursor = await self._exec(
                "INSERT INTO turns (call_sid, idx, role, text, heard_text, started, ended, "
                "interrupted, kb_chunks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                [call_sid, idx, role, text, heard_text, started, ended or time.time(),
                 int(interrupted), json.dumps(kb_chunks) if kb_chunks is not None else None])
            row = await cursor.fetchone()
            return int(row["id"])
        return await self._write("turn", write)

    async def add_metrics(self, turn_id: int, call_sid: str, metrics: TurnMetrics) -> None:
        """One turn's metrics row; nothing when nothing was measured."""
        if not (columns := metrics.row()):
            return
        row = {"turn_id": turn_id, "call_sid": call_sid, **columns}
        names = [sql.Identifier(name) for name in row]
        query = sql.SQL(
            "INSERT INTO turn_metrics ({}) VALUES ({}) ON CONFLICT (turn_id) DO UPDATE SET {}"
        ).format(sql.SQL(", ").join(names), sql.SQL(", ").join(sql.Placeholder() * len(row)),
                 sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(n) for n in names))
        await self._write("metrics", lambda: self._exec(query, list(row.values())))

    async def add_event(self, call_sid: str, type_: str, **detail: Any) -> None:
        await self._write("event", lambda: self._exec(
            "INSERT INTO events (call_sid, at, type, detail) VALUES (%s, %s, %s, %s)",
            [call_sid, time.time(), type_, json.dumps(detail, default=str)]))

    async def add_message(self, call_sid: str, *, name: str, callback_number: str,
                          message: str) -> dict[str, Any] | None:
        """Store a message; an empty ``callback_number`` becomes the call's caller ID."""
        async def write() -> dict[str, Any]:
            cursor = await self._exec(
                "INSERT INTO messages (call_sid, at, name, callback_number, message, delivered, "
                "delivery_error) SELECT %s, %s, %s, COALESCE(NULLIF(%s, ''), "
                "(SELECT from_number FROM calls WHERE call_sid = %s), ''), %s, 0, '' "
                "RETURNING *", [call_sid, time.time(), name, callback_number, call_sid, message])
            return dict(await cursor.fetchone())
        return await self._write("message", write)

    async def message_delivered(self, message_id: int, error: str = "") -> None:
        await self._write("message delivery", lambda: self._exec(
            "UPDATE messages SET delivered = %s, delivery_error = %s WHERE id = %s",
            [int(not error), error, message_id]))

    # --- reads ------------------------------------------------------------------------------

    async def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest messages first."""
        async def read() -> list[dict[str, Any]]:
            cursor = await self._exec("SELECT * FROM messages ORDER BY id DESC LIMIT %s", [limit])
            return list(await cursor.fetchall())
        return await self._run(read)

    async def call_record(self, call_sid: str) -> dict[str, Any] | None:
        """The call, its turns (with metrics) and events, as plain JSON-able data."""
        async def read() -> dict[str, Any] | None:
            async def rows(query: str) -> list[dict[str, Any]]:
                cursor = await self._exec(query, [call_sid])
                return list(await cursor.fetchall())

            calls = await rows("SELECT * FROM calls WHERE call_sid = %s")
            if not calls:
                return None
            metrics = {m["turn_id"]: m for m in
                       await rows("SELECT * FROM turn_metrics WHERE call_sid = %s")}
            turns = []
            for turn in await rows("SELECT * FROM turns WHERE call_sid = %s ORDER BY id"):
                turn["interrupted"] = bool(turn["interrupted"])
                turn["kb_chunks"] = json.loads(turn["kb_chunks"]) if turn["kb_chunks"] else []
                turn["metrics"] = metrics.get(turn["id"])
                turns.append(turn)
            events = [dict(e, detail=json.loads(e["detail"] or "{}")) for e in
                      await rows("SELECT * FROM events WHERE call_sid = %s ORDER BY id")]
            return {"call": calls[0], "turns": turns, "events": events}
        return await self._run(read)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring the database to the latest schema, each step in its own transaction; returns it.

    An advisory lock serialises boxes starting at the same moment against one database.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cursor = await conn.execute("SELECT max(version) AS v FROM schema_version")
        row = await cursor.fetchone()
        version = (row["v"] if isinstance(row, dict) else row[0]) or 0  # type: ignore[index]
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():
                await conn.execute(step)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [number])
    return len(MIGRATIONS)


def call_store(settings: Settings) -> SqliteCallStore | PostgresCallStore:
    """PostgreSQL when ``database_url`` is set, else the single box's SQLite file (default)."""
    if settings.database_url:
        return PostgresCallStore(settings.database_url, box_name(settings))
    return SqliteCallStore(settings.db_path)
