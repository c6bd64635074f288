"""The session's sense of time, injected so tests can drive it instead of waiting for it.

Timings (metrics, what share of a sentence was heard) and timers (the hold phrase, how long to
wait for a mark) go through one :class:`Clock`; the session tests swap in a clock they advance by
hand, so they check order and arithmetic rather than how fast a busy machine happens to be.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


MONOTONIC = MonotonicClock()


async def wait_at_most(future: asyncio.Future[None], seconds: float, clock: Clock) -> bool:
    """Wait for ``future`` (never cancelling it) or ``seconds`` on ``clock``; True if it came."""
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({future, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    return future.done()
