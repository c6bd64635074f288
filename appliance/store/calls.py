"""Async call log over sqlite-utils.

Every write goes through one dedicated thread: SQLite work never runs on the event loop, writes
are serialised (no 'database is locked' between calls), and each write is its own transaction
so a crash mid-call never corrupts what was already logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from appliance.private_files import private_file
from appliance.store.metrics import TurnMetrics
from appliance.store.schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")


class AssistantTurns(ABC):
    """The assistant's side of a turn as the two writes every call log has (the turn, then its
    metrics), composed once for both back ends."""

    @abstractmethod
    async def add_turn(self, call_sid: str, *, idx: int, role: str, text: str,
                       started: float, ended: float | None = None, heard_text: str | None = None,
                       interrupted: bool = False, kb_chunks: list[str] | None = None) -> int | None:
        ...

    @abstractmethod
    async def add_metrics(self, turn_id: int, call_sid: str, metrics: TurnMetrics) -> None: ...

    async def add_assistant_turn(self, call_sid: str, *, idx: int, text: str, heard_text: str,
                                 started: float, interrupted: bool, kb_chunks: list[str],
                                 metrics: TurnMetrics | None) -> None:
        """The agent's side of a turn (what it said, what the caller heard) and its latencies."""
        turn_id = await self.add_turn(call_sid, idx=idx, role="assistant", text=text,
                                      heard_text=heard_text, started=started,
                                      interrupted=interrupted, kb_chunks=kb_chunks)
        if turn_id is not None and metrics is not None:
            await self.add_metrics(turn_id, call_sid, metrics)


class SqliteCallStore(AssistantTurns):
    """The SQLite call log (implements ``engines.base.CallStore``). Open with :meth:`open`; all
    public methods are coroutines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callstore")
        self._db: sqlite_utils.Database | None = None

    async def open(self) -> int:
        """Create/migrate the database; mark calls a crash left open as abandoned."""
        return await self._run(self._open)

    def _open(self) -> int:
        private_file(self.path)  # SQLite gives the -wal and -shm files the database's mode
        for companion in ("-wal", "-shm"):
            if (path := self.path.with_name(self.path.name + companion)).exists():
                private_file(path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db = sqlite_utils.Database(conn)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        migrate(self._db)
        with self._db.conn:
            cursor = self._db.execute(
                "UPDATE calls SET status='abandoned', end_reason='server restarted', ended=? "
                "WHERE ended IS NULL",
                [time.time()],
            )
        if cursor.rowcount:
            log.warning("marked %d call(s) left open by a crash as abandoned", cursor.rowcount)
        return cursor.rowcount

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.conn.close()
        await self._run(close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _write(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run a write; a failing disk is logged and survived, never raised into a call."""
        try:
            return await self._run(fn)
        except (sqlite3.Error, OSError) as err:
            log.error("call log write failed (%s): %s", what, err)
            return None

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("the call log is not open")
        return self._db

    # --- writes -----------------------------------------------------------------------------

    async def call_started(self, call_sid: str, *, mode: str, from_number: str = "",
                           to_number: str = "", status: str = "ringing") -> None:
        row = {"call_sid": call_sid, "mode": mode, "from_number": from_number,
               "to_number": to_number, "started": time.time(), "status": status}
        await self._write("call start", lambda: self.db.table("calls").insert(row, ignore=True))

    async def update_call(self, call_sid: str, **fields: Any) -> None:
        """Update known columns of a call, creating the row if Twilio told us of it first."""
        def write() -> None:
            table = self.db.table("calls")
            if not table.count_where("call_sid = ?", [call_sid]):
                table.insert({"call_sid": call_sid, "started": time.time(), "status": "unknown",
                              "mode": ""})
            table.update(call_sid, fields)
        await self._write("call update", write)

    async def call_ended(self, call_sid: str, *, status: str, reason: str) -> None:
        def write() -> None:
            self.db.execute(
                "UPDATE calls SET ended=?, status=?, end_reason=? "
                "WHERE call_sid=? AND ended IS NULL",
                [time.time(), status, reason, call_sid],
            )
        await self._write("call end", write)

    async def add_turn(self, call_sid: str, *, idx: int, role: str, text: str,
                       started: float, ended: float | None = None, heard_text: str | None = None,
                       interrupted: bool = False, kb_chunks: list[str] | None = None) -> int | None:
        row = {"call_sid": call_sid, "idx": idx, "role": role, "text": text,
               "heard_text": heard_text, "started": started, "ended": ended or time.time(),
               "interrupted": int(interrupted),
               "kb_chunks": json.dumps(kb_chunks) if kb_chunks is not None else None}
        return await self._write("turn", lambda: self.db.table("turns").insert(row).last_pk)

    async def add_metrics(self, turn_id: int, call_sid: str, metrics: TurnMetrics) -> None:
        """One turn's metrics row; nothing when nothing was measured."""
        if not (columns := metrics.row()):
            return
        row = {"turn_id": turn_id, "call_sid": call_sid, **columns}
        table = self.db.table("turn_metrics")
        await self._write("metrics", lambda: table.insert(row, replace=True))

    async def add_event(self, call_sid: str, type_: str, **detail: Any) -> None:
        row = {"call_sid": call_sid, "at": time.time(), "type": type_,
               "detail": json.dumps(detail, default=str)}
        await self._write("event", lambda: self.db.table("events").insert(row))

    async def add_message(self, call_sid: str, *, name: str, callback_number: str,
                          message: str) -> dict[str, Any] | None:
        """Store a message; an empty ``callback_number`` becomes the call's caller ID."""
        def write() -> dict[str, Any]:
            number = callback_number
            if not number:
                call = next(self.db.table("calls").rows_where("call_sid = ?", [call_sid]), None)
                number = (call or {}).get("from_number") or ""
            row = {"call_sid": call_sid, "at": time.time(), "name": name,
                   "callback_number": number, "message": message, "delivered": 0,
                   "delivery_error": ""}
            row["id"] = self.db.table("messages").insert(row).last_pk
            return row
        return await self._write("message", write)

    async def message_delivered(self, message_id: int, error: str = "") -> None:
        row = {"delivered": int(not error), "delivery_error": error}
        await self._write("message delivery",
                          lambda: self.db.table("messages").update(message_id, row))

    # --- reads ------------------------------------------------------------------------------

    async def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest messages first."""
        return await self._run(lambda: list(self.db.table("messages").rows_where(
            order_by="id desc", limit=limit)))

    async def call_record(self, call_sid: str) -> dict[str, Any] | None:
        """The call, its turns (with metrics) and events, as plain JSON-able data."""
        def read() -> dict[str, Any] | None:
            calls = list(self.db.table("calls").rows_where("call_sid = ?", [call_sid]))
            if not calls:
                return None
            metrics = {m["turn_id"]: m for m in
                       self.db.table("turn_metrics").rows_where("call_sid = ?", [call_sid])}
            turns = []
            rows = self.db.table("turns").rows_where("call_sid = ?", [call_sid], order_by="id")
            for turn in rows:
                turn["interrupted"] = bool(turn["interrupted"])
                turn["kb_chunks"] = json.loads(turn["kb_chunks"]) if turn["kb_chunks"] else []
                turn["metrics"] = metrics.get(turn["id"])
                turns.append(turn)
            events = [dict(e, detail=json.loads(e["detail"] or "{}")) for e in
                      self.db.table("events").rows_where("call_sid = ?", [call_sid], order_by="id")]
            return {"call": calls[0], "turns": turns, "events": events}
        return await self._run(read)
