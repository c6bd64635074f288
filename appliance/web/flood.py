"""Per-socket rate limit: messages beyond a per-second budget are dropped, logged once a burst."""

from __future__ import annotations

import logging
import time

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
