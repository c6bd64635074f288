"""Per-socket rate limit: messages beyond a per-second budget are dropped, logged once a burst."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class FloodGuard:
    def __init__(self, per_second: int, what: str) -> None:
        self.per_second = per_second
        self.what = what
        self._window_start = time.monotonic()
        self._count = 0

    def allow(self) -> bool:
        """Count one message; False once this second's budget is spent."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._count = now, 0
        self._count += 1
        if self._count == self.per_second + 1:
            log.warning("%s flood: over %d messages in 1 s; dropping the excess", self.what,
                        self.per_second)
        return self._count <= self.per_second


class AudioBudget:
    """Audio a socket may send, in seconds of audio: real time plus a small burst (a token
    bucket). Counting frames is not enough: one frame may carry up to a second of audio, so a
    frame budget alone let one socket push ~150 s of audio a second into the shared VAD worker.
    Audio over the budget is dropped (one log line per episode); the caller of :meth:`admit`
    closes the socket once :attr:`exhausted` (it kept exceeding the budget)."""

    def __init__(self, burst_s: float, close_after_s: float, what: str,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.burst_s = burst_s
        self.close_after_s = close_after_s
        self.what = what
        self._now = now
        self._level = burst_s
        self._last = now()
        self._over = False
        self.dropped_s = 0.0

    def admit(self, seconds: float) -> bool:
        """Spend ``seconds`` of audio; False (drop it) when over the budget."""
        now = self._now()
        self._level = min(self.burst_s, self._level + (now - self._last))
        self._last = now
        if seconds <= self._level + 1e-3:  # a millisecond of slack for float drift
            self._level -= seconds
            self._over = False
            return True
        self.dropped_s += seconds
        if not self._over:
            self._over = True
            log.warning("%s audio flood: faster than real time (+%g s burst); dropping the excess",
                        self.what, self.burst_s)
        return False

    @property
    def exhausted(self) -> bool:
        return self.dropped_s >= self.close_after_s
