"""Numbers for the benchmark: percentiles, summaries, and an event-loop lag sampler.

Pure and dependency-free so they can be unit-tested in milliseconds; the runner feeds them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.store.metrics import PROMPT_FIELDS, STAGES

STAGE_LABELS = {
    "endpoint_s": "endpoint delay",
    "stt_s": "STT",
    "retrieval_s": "KB retrieval (embed + search)",
    "llm_ttft_s": "LLM first token",
    "first_sentence_s": "first sentence ready",
    "tts_first_audio_s": "TTS first audio",
    "other_s": "worker queues + rest",
    "server_v2v_s": "server v2v",
    "transport_s": "socket + playout",
}


# How a generated answer's prompt was read: its first token's split (counts, then seconds).
PROMPT_LABELS = {
    "prompt_tokens": "prompt tokens",
    "prompt_reused": "  reused from the cache",
    "prompt_evaluated": "  read (evaluated)",
    "prompt_eval_s": "prompt evaluation, s",
    "prompt_tokens_per_s": "  tokens/s read",
    "prompt_threads": "threads reading it",
}
PROMPT_ROWS = (*PROMPT_FIELDS, "prompt_tokens_per_s")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between ranks (numpy's default).

    Raises ValueError on an empty sequence: callers decide what "no data" means.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """p50 / p95 / p99 / max / mean of one measurement; ``n`` is how many values were seen."""

    n: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None

    def to_json(self, digits: int = 3) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {"n": self.n, "p50": r(self.p50), "p95": r(self.p95), "p99": r(self.p99),
                "max": r(self.max), "mean": r(self.mean)}


def summarize(values: Iterable[float | None]) -> Summary:
    """Summary of the values that are numbers; None and NaN (a stage that never ran) are skipped."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return Summary(0)
    return Summary(n=len(clean), p50=percentile(clean, 50), p95=percentile(clean, 95),
                   p99=percentile(clean, 99), max=max(clean), mean=sum(clean) / len(clean))


def turn_stages(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """One turn's server metrics, plus the time no stage accounts for.

    ``other_s`` is the server's voice-to-voice minus the stages on its critical path (endpoint,
    STT, retrieval, first sentence, first audio): mostly waits for a free worker. Records from
    before retrieval was stored count it in ``other_s``.
    """
    out: dict[str, float | None] = {k: _num(metrics.get(k)) for k in STAGES}
    out["server_v2v_s"] = v2v = _num(metrics.get("v2v_s"))
    parts = [out["endpoint_s"], out["stt_s"], out["first_sentence_s"], out["tts_first_audio_s"]]
    if v2v is not None and all(p is not None for p in parts):
        spent = sum(p for p in parts if p is not None) + (out["retrieval_s"] or 0.0)
        out["other_s"] = max(0.0, v2v - spent)
    else:
        out["other_s"] = None
    return out


def prompt_split(metrics: Mapping[str, Any]) -> dict[str, float | None] | None:
    """One turn's prompt reading, plus its speed; None for a turn the model did not write."""
    if _num(metrics.get("prompt_tokens")) is None:
        return None
    out: dict[str, float | None] = {k: _num(metrics.get(k)) for k in PROMPT_FIELDS}
    evaluated, seconds = out["prompt_evaluated"], out["prompt_eval_s"]
    out["prompt_tokens_per_s"] = (evaluated / seconds if evaluated and seconds else None)
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class LoopLag:
    """Samples how late an event loop wakes up: the lag every coroutine on that loop suffers.

    A task sleeps ``interval_s`` again and again; each wake-up later than asked is one sample
    (seconds). Blocking work on the loop (a model call, a big JSON dump) shows up as a long one.
    """

    def __init__(self, interval_s: float = 0.01, keep: int = 100_000) -> None:
        self.interval_s = interval_s
        self.keep = keep
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def reset(self) -> list[float]:
        """Return the samples so far and start afresh (one benchmark level each)."""
        taken, self.samples = self.samples, []
        return taken

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, time.perf_counter() - asked))

    def record(self, lag_s: float) -> None:
        if len(self.samples) >= self.keep:
            del self.samples[: self.keep // 2]
        self.samples.append(lag_s)


def ms(summary: Summary) -> dict[str, Any]:
    """A seconds summary as milliseconds, for lag figures that are small."""
    def r(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {"n": summary.n, "p50": r(summary.p50), "p95": r(summary.p95),
            "p99": r(summary.p99), "max": r(summary.max)}
