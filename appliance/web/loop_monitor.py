"""Event-loop lag sampler: the one number that shows whether anything blocks the loop.

A task asks to wake every ``interval`` seconds and records how late it actually woke. Any
blocking call on the loop (a model run, a slow disk write) shows up directly as lag.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np


class LoopLagMonitor:
    def __init__(self, interval: float = 0.02, keep: int = 30000) -> None:
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self._samples.append(max(0.0, time.perf_counter() - before - self.interval))

    def reset(self) -> None:
        self._samples.clear()

    def stats(self) -> dict[str, float | int]:
        """Lag in milliseconds since start or the last reset."""
        if not self._samples:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        lag = np.array(self._samples) * 1000
        return {"samples": int(lag.size), "p50_ms": round(float(np.percentile(lag, 50)), 2),
                "p99_ms": round(float(np.percentile(lag, 99)), 2),
                "max_ms": round(float(lag.max()), 2)}
