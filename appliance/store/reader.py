"""The one read interface over the call log, for the console and ``appliance calls purge``.

Whatever back end is configured (the SQLite file, or PostgreSQL when ``database_url`` is set),
the console asks the same SQL of it: the queries are written once, with ``?`` placeholders, in
the subset both dialects share (no ``round``/date functions, ``lower(x) LIKE ?`` for
case-blind search: SQLite's LIKE ignores ASCII case and PostgreSQL's does not). The only
dialect difference left is the placeholder, translated here, and where the work runs: SQLite on
a thread of its own (never on the event loop, never on the call log's writer thread), PostgreSQL
on its own async connection (so a console query never queues behind a call's writes).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from appliance.config import Settings
from appliance.store import postgres
from appliance.store.schema import migrate

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = Sequence[Any]
Statement = tuple[str, Params]


class CallLogReader(ABC):
    """Rows out of the call log, and the few deletes retention needs, on either back end."""

    dialect: str

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def rows(self, query: str, params: Params = ()) -> list[dict[str, Any]]:
        """Every row of ``query`` (``?`` placeholders) as a dict."""

    @abstractmethod
    async def transaction(self, statements: Sequence[Statement]) -> list[int]:
        """Run the statements in one transaction; their row counts."""

    async def value(self, query: str, params: Params = ()) -> Any:
        """The first column of the first row (a count), or None."""
        rows = await self.rows(query, params)
        return next(iter(rows[0].values())) if rows else None


class SqliteReader(CallLogReader):
    """The SQLite call log, read on a connection and thread of its own (WAL: reads never wait
    for the writer)."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="calllog-read")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            import sqlite_utils

            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(sqlite_utils.Database(conn))
            return conn
        self._conn = await self._run(connect)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the call log reader is not open")
        return self._conn

    async def rows(self, query: str, params: Params = ()) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            cursor = self.conn.execute(query, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return await self._run(read)

    async def transaction(self, statements: Sequence[Statement]) -> list[int]:
        def write() -> list[int]:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                counts = [self.conn.execute(q, list(p)).rowcount for q, p in statements]
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return counts
        return await self._run(write)


def pg_sql(query: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled). The console's SQL has
    no ``?`` inside string literals; every value travels as a parameter or a fixed pattern."""
    return query.replace("%", "%%").replace("?", "%s")


class PostgresReader(CallLogReader):
    """The PostgreSQL call log, read on a connection of its own; a connection the server
    dropped is reopened once, as the store does."""

    dialect = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        # One statement or transaction at a time: on a shared connection another request's
        # query would otherwise run inside a purge's transaction.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self._connect()
        await postgres.migrate(self._live())  # the console may open before the store

    async def _connect(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                           row_factory=dict_row)

    def _live(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None:
            raise RuntimeError("the call log reader is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _retry(self, fn: Callable[[psycopg.AsyncConnection[dict[str, Any]]], Any]) -> Any:
        async with self._lock:
            if self._live().closed:
                await self._connect()
            try:
                return await fn(self._live())
            except psycopg.OperationalError:
                if not self._live().closed:
                    raise
                log.warning("call log connection lost; reconnecting")
                await self._connect()
                return await fn(self._live())

    async def rows(self, query: str, params: Params = ()) -> list[dict[str, Any]]:
        async def read(conn: psycopg.AsyncConnection[dict[str, Any]]) -> list[dict[str, Any]]:
            cursor = await conn.execute(pg_sql(query), list(params))
            return list(await cursor.fetchall())
        result: list[dict[str, Any]] = await self._retry(read)
        return result

    async def transaction(self, statements: Sequence[Statement]) -> list[int]:
        async def write(conn: psycopg.AsyncConnection[dict[str, Any]]) -> list[int]:
            counts = []
            async with conn.transaction():
                for query, params in statements:
                    cursor = await conn.execute(pg_sql(query), list(params))
                    counts.append(cursor.rowcount)
            return counts
        result: list[int] = await self._retry(write)
        return result


def call_log_reader(settings: Settings) -> CallLogReader:
    """The reader for the configured back end: PostgreSQL when ``database_url`` is set."""
    if settings.database_url:
        return PostgresReader(settings.database_url)
    return SqliteReader(settings.db_path)
