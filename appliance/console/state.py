"""The console's shared state: accounts, the call log reader, the login limiter, the KB admin.

Accounts, sessions and the audit log live in this box's SQLite file (``<data_dir>/calls.db``)
whatever the call log's back end: a login is per box. Their SQLite work runs on one dedicated
thread with its own connection, never on the event loop (the call log's writer thread is left to
the calls). The calls themselves are read through :class:`CallLogReader`, from SQLite or
PostgreSQL as configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlite_utils
from litestar import Request
from litestar.connection import ASGIConnection

from appliance.auth import Accounts, open_accounts_db
from appliance.auth.ratelimit import LoginLimiter
from appliance.config import Settings
from appliance.console.insights import CachedEmbed, Embed
from appliance.console.kbadmin import KbAdmin
from appliance.core.live import Subscription
from appliance.kb import KbError
from appliance.models.locate import ModelMissing
from appliance.store.reader import CallLogReader, call_log_reader
from appliance.web.runtime import Runtime

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class Console:
    settings: Settings
    runtime: Runtime
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="console-db"))
    _db: sqlite_utils.Database | None = None
    # Live-page streams by the session cookie that opened them, so a logout ends them at once.
    _streams: dict[str, set[Subscription]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kb = KbAdmin(self.settings, self.runtime)
        self.call_log: CallLogReader = call_log_reader(self.settings)
        self._embed: Embed | None = None

    async def open(self) -> None:
        self._db = await self._call(lambda: open_accounts_db(self.settings.db_path))
        await self.call_log.open()

    async def close(self) -> None:
        await self.call_log.close()
        if self._db is not None:
            await self._call(self._db.conn.close)
        self._executor.shutdown(wait=True)

    def embedder(self) -> Embed | None:
        """The knowledge base's sentence model for grouping questions, made on first use (it
        loads in the worker thread that first embeds); None if its files are missing."""
        if self._embed is None:
            from appliance.kb.embedding import embedder_from_settings  # imports chromadb

            try:
                self._embed = CachedEmbed(embedder_from_settings(self.settings))
            except (ModelMissing, KbError) as err:
                log.warning("insights: questions grouped by exact text only: %s", err)
                return None
        return self._embed

    def watching(self, secret: str, subscription: Subscription) -> None:
        if secret:
            self._streams.setdefault(secret, set()).add(subscription)

    def unwatching(self, secret: str, subscription: Subscription) -> None:
        if (streams := self._streams.get(secret)) is not None:
            streams.discard(subscription)
            if not streams:
                del self._streams[secret]

    def logged_out(self, secret: str) -> None:
        """End the live streams this session opened."""
        for subscription in self._streams.get(secret, ()):
            subscription.close("logged out")

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def db(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``fn(db)`` on the console's database thread."""
        db = self._db
        if db is None:
            raise RuntimeError("console database is not open")
        return await self._call(lambda: fn(db))

    async def accounts(self, fn: Callable[[Accounts], T]) -> T:
        return await self.db(lambda db: fn(Accounts(db)))


def console_of(connection: Request[Any, Any, Any] | ASGIConnection[Any, Any, Any, Any]) -> Console:
    return connection.app.state.console
