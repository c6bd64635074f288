"""Login rate limiting per (client address, username).

Five failures in fifteen minutes lock that pair out until the oldest failure ages out: an
attacker gets 480 guesses a day per name and address, against argon2 hashes, while an operator
who mistypes twice is never bothered. Kept in memory: a restart forgets failures, which costs an
attacker a restart they cannot cause.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 5
WINDOW_S = 15 * 60.0


class LoginLimiter:
    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        now = self._clock()
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return deque()
        return failures

    def retry_after(self, address: str, username: str) -> float:
        """Seconds until this pair may try again; 0 when it may now."""
        failures = self._recent((address, username.lower()))
        if len(failures) < self.max_failures:
            return 0.0
        return self.window_s - (self._clock() - failures[0])

    def failed(self, address: str, username: str) -> None:
        key = (address, username.lower())
        self._recent(key)
        self._failures.setdefault(key, deque()).append(self._clock())

    def succeeded(self, address: str, username: str) -> None:
        self._failures.pop((address, username.lower()), None)
