"""One call's share of a worker pool over time, so a caller who never stops talking cannot keep a
worker every call shares to itself.

:class:`~appliance.core.workers.OneAtATime` bounds how many jobs a call has in the pool at once
(one); this bounds how much worker time it takes in the long run. Measured with the bench's
endless talker (``appliance bench --talker``: sentences with a 0.3 s breath between): every
breath ended a turn, the caller spoke on, and the carried-over audio was transcribed again — 55
transcriptions of 20 s in 2.3 minutes, one of the two STT workers busy all the time, and the
four good calls' STT time p50 ×1.97 / p95 ×1.51 against the same run without the talker (2-core
box shared with other work).

The budget is a bucket of worker-seconds: it refills at ``share`` (the pool's workers over the
calls it serves) and holds ``burst_s`` (10 s: a normal caller spends well under a second of STT a
turn, three times that on a loaded box, so it is never held back), and a call that has spent
more than its share waits before its next job until it is even again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from appliance.core.clock import Clock

T = TypeVar("T")


class WorkerShare:
    def __init__(self, clock: Clock, share: float, burst_s: float) -> None:
        self.clock = clock
        self.share = share  # worker-seconds per second this call may use in the long run
        self.burst_s = burst_s
        self._level = burst_s
        self._last = clock.now()
        self.waited_s = 0.0  # how long this call's jobs were held back, in all

    @classmethod
    def of_pool(cls, clock: Clock, workers: int, calls: int, burst_s: float = 10.0) -> WorkerShare:
        """A call's share of ``workers`` shared by up to ``calls`` calls (all of it when alone)."""
        return cls(clock, min(1.0, workers / max(1, calls)), burst_s)

    def _refill(self) -> None:
        now = self.clock.now()
        self._level = min(self.burst_s, self._level + (now - self._last) * self.share)
        self._last = now

    @property
    def debt_s(self) -> float:
        """Worker-seconds spent beyond the budget; the next job waits until it is repaid."""
        self._refill()
        return max(0.0, -self._level)

    async def wait_turn(self) -> None:
        """Return once this call is within its share (at once, unless it overspent)."""
        while (debt := self.debt_s) > 0:
            wait = debt / self.share
            self.waited_s += wait
            await self.clock.sleep(wait)

    def spent(self, seconds: float) -> None:
        """A job of this call kept a worker ``seconds``."""
        self._refill()
        self._level -= seconds

    def timed(self, fn: Callable[..., T], loop: asyncio.AbstractEventLoop) -> Callable[..., T]:
        """``fn`` measured where it runs (a worker thread) and charged on ``loop``: charged even
        when the request that started it was cancelled meanwhile (a worker cannot stop midway,
        and the time is spent all the same)."""
        def run(*args: object) -> T:
            started = self.clock.now()
            try:
                return fn(*args)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed: the call is over
                    loop.call_soon_threadsafe(self.spent, self.clock.now() - started)
        return run
