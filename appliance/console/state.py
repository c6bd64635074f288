"""The console's shared state: one database thread, accounts, the login limiter, the KB admin.

All SQLite work for the console runs on one dedicated thread with its own connection, never on
the event loop (the call log's writer thread is left to the calls).
"""

from __future__ import annotations

import asyncio
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
from appliance.console.kbadmin import KbAdmin
from appliance.core.live import Subscription
from appliance.web.runtime import Runtime

T = TypeVar("T")


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

    async def open(self) -> None:
        self._db = await self._call(lambda: open_accounts_db(self.settings.db_path))

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.conn.close)
        self._executor.shutdown(wait=True)

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
