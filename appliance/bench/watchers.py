"""Logged-in console viewers for ``appliance bench --console-watchers N``.

Each viewer does what an operator's browser with the Live page open does: holds the live
stream (``/api/v1/live/stream``, Server-Sent Events) and reads every event, and every
``refresh_s`` reloads the Live page and the calls list, as someone clicking between them would.
They authenticate with the API token the bench already uses (the configured token is an admin
credential for the console too). The issue's bar: the server's loop lag p99 and the callers'
voice-to-voice p95 with viewers stay within 10 % of the same level without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx

log = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/live/stream"
PAGES = ("/console/live", "/console/calls")
REFRESH_S = 2.0


class ConsoleWatchers:
    def __init__(self, base_url: str, headers: dict[str, str], count: int,
                 refresh_s: float = REFRESH_S) -> None:
        self.base_url = base_url
        self.headers = headers
        self.count = count
        self.refresh_s = refresh_s
        self.events: Counter[str] = Counter()  # SSE events received, by type
        self.page_loads = 0
        self.errors: Counter[str] = Counter()

    async def run(self) -> None:
        """Every viewer's stream and page loads, until cancelled."""
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=httpx.Timeout(10, read=None),
                                     trust_env=False) as http:
            await asyncio.gather(*(task for _ in range(self.count)
                                   for task in (self._stream(http), self._pages(http))))

    def result(self) -> dict[str, Any]:
        return {"watchers": self.count, "refresh_s": self.refresh_s,
                "events": dict(self.events), "page_loads": self.page_loads,
                "errors": dict(self.errors)}

    async def _stream(self, http: httpx.AsyncClient) -> None:
        """One open stream, reopened if the server ends it (as a browser's EventSource does)."""
        while True:
            try:
                async with http.stream("GET", STREAM_PATH) as response:
                    if response.status_code != 200:
                        self.errors[f"stream HTTP {response.status_code}"] += 1
                    else:
                        async for line in response.aiter_lines():
                            if line.startswith("event: "):
                                self.events[line.removeprefix("event: ")] += 1
            except httpx.HTTPError as err:
                self.errors[f"stream {type(err).__name__}"] += 1
            await asyncio.sleep(1.0)

    async def _pages(self, http: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            for path in PAGES:
                try:
                    response = await http.get(path)
                    if response.status_code == 200:
                        self.page_loads += 1
                    else:
                        self.errors[f"{path} HTTP {response.status_code}"] += 1
                except httpx.HTTPError as err:
                    self.errors[f"{path} {type(err).__name__}"] += 1


def with_and_without(without: dict[str, Any], watched: dict[str, Any]) -> dict[str, Any]:
    """The two figures the issue compares, without and with viewers, and their ratios."""
    def figures(level: dict[str, Any]) -> tuple[float | None, float | None]:
        lag = (level["loop_lag_ms"].get("server") or {}).get("p99")
        return lag, level["v2v_heard_s"].get("p95")

    (lag0, v2v0), (lag1, v2v1) = figures(without), figures(watched)
    return {"loop_lag_p99_ms": [lag0, lag1], "loop_lag_ratio": _ratio(lag0, lag1),
            "v2v_heard_p95_s": [v2v0, v2v1], "v2v_ratio": _ratio(v2v0, v2v1)}


def _ratio(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return round(after / before, 3)
