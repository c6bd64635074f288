"""Refusal logging at a bounded rate.

Every refused request (bad signature, oversize body, wrong Host, missing API token) is worth a
log line, but a flood of them must not become a flood of log lines: the fuzz campaign of issue 11
sent 5,549 malformed frames in minutes, and a journal filling at that rate hides everything
else. Each kind of refusal gets a token bucket (a burst, then one line per interval); what was
held back is counted and reported on the next line that gets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BURST = 10  # lines logged at once for one kind of refusal
INTERVAL_S = 1.0  # then one line per interval


@dataclass
class _Bucket:
    tokens: float
    last: float
    held: int = 0


@dataclass
class RefusalLog:
    """``warning(kind, message, *args)`` logs, unless ``kind`` is over its rate."""

    logger: logging.Logger
    burst: int = BURST
    interval_s: float = INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` as a warning if ``kind`` has budget left; True if logged."""
        now = self.clock()
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = _Bucket(tokens=float(self.burst), last=now)
        bucket.tokens = min(float(self.burst),
                            bucket.tokens + (now - bucket.last) / self.interval_s)
        bucket.last = now
        if bucket.tokens < 1.0:
            bucket.held += 1
            return False
        bucket.tokens -= 1.0
        if bucket.held:
            message += f" (and {bucket.held} more {kind} refusal(s) not logged)"
            bucket.held = 0
        self.logger.warning(message, *args)
        return True
