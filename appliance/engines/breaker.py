"""A circuit breaker shared by every engine that fails over from a remote primary to a local one.

ElevenLabs → Piper (speech) and a model server → the in-process LLM (answers) use it the same way:
after N failures in a row the primary is skipped for a cool-down, then one trial request decides.
It is not thread-safe: callers that use it from worker threads hold their own lock.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

RATE_LIMIT_BASE_S = 1.0  # first 429 back-off when the server sends no Retry-After


class BreakerState(enum.Enum):
    CLOSED = "closed"  # use the primary
    OPEN = "open"  # skip it until the cool-down ends
    HALF_OPEN = "half-open"  # one trial request decides
    DISABLED = "disabled"  # off until reconfigured (bad key)


class CircuitBreaker:
    """Counts failures in a row; its methods say whether the state changed, so callers log once."""

    def __init__(self, failures_to_open: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = max(1, failures_to_open)
        self.cooldown_s = cooldown_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._clock = clock
        self._until = 0.0
        self._trial = False

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    @property
    def retry_in(self) -> float:
        """Seconds until the next trial while open."""
        return max(0.0, self._until - self._clock())

    def allow(self) -> bool:
        """May a request go to the primary now? In half-open, only the one trial may."""
        if self.state is BreakerState.OPEN and self._clock() >= self._until:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return self.state is BreakerState.CLOSED

    def success(self) -> bool:
        """Close; True if it was not closed (the primary is back)."""
        if self.state is BreakerState.DISABLED:
            return False
        changed = self.state is not BreakerState.CLOSED
        self.state, self.failures, self._trial = BreakerState.CLOSED, 0, False
        return changed

    def failure(self, *, trip: bool = False) -> bool:
        """Count a failure; ``trip`` opens at once. True if it opened (or re-opened) now."""
        self.failures += 1
        if self.state is BreakerState.DISABLED:
            return False
        if trip or self.state is BreakerState.HALF_OPEN or self.failures >= self.failures_to_open:
            return self._open(self.cooldown_s)
        return False

    def back_off(self, retry_after: float | None) -> bool:
        """Rate-limited: open for Retry-After, else 1, 2, 4 … s up to the cool-down."""
        self.failures += 1
        if self.state is BreakerState.DISABLED:
            return False
        if retry_after is None:
            retry_after = min(self.cooldown_s, RATE_LIMIT_BASE_S * 2 ** (self.failures - 1))
        return self._open(retry_after)

    def disable(self) -> bool:
        """Off for good (until restart); True the first time."""
        changed = self.state is not BreakerState.DISABLED
        self.state, self._trial = BreakerState.DISABLED, False
        return changed

    def abandon(self) -> None:
        """The trial ended without a verdict (the caller barged in): let the next one try."""
        self._trial = False

    def _open(self, seconds: float) -> bool:
        changed = self.state is not BreakerState.OPEN
        until = self._clock() + seconds
        self._until = until if changed else max(self._until, until)  # late failures extend it
        self.state, self._trial = BreakerState.OPEN, False
        return changed
