"""Prometheus ``/metrics`` and the Kubernetes-style probes ``/healthz/live`` and ``/healthz/ready``.

Call outcomes and latency histograms are read from the call log at scrape time rather than
counted in the call path: the numbers then survive restarts, agree with the console exactly,
and a call costs no extra work. A scrape is one aggregate query per family, on whichever call log
is configured (SQLite on the reader's thread, never the event loop, or PostgreSQL). The stage
columns are the typed turn record's (``store.metrics.STAGES``), so a stage added there is
exported here.

What lives only in memory (calls in progress, loop lag, TTS voice switches, breaker states,
worker queues, live-page watchers) is read on the event loop first, where it changes, and
handed to the scrape as plain values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotAuthorizedException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from appliance.console.security import authenticate
from appliance.console.state import console_of
from appliance.engines.base import FailsOver
from appliance.engines.breaker import BreakerState
from appliance.engines.failover_tts import FailoverTts
from appliance.store.metrics import STAGES
from appliance.store.reader import CallLogReader
from appliance.web.runtime import Runtime

BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class InMemory:
    """What the scrape reads of the running process, copied on the event loop."""

    active_calls: int = 0
    ready: bool = False
    loop_lag: dict[str, Any] = field(default_factory=dict)
    tts_switches: dict[tuple[str, str, str], int] = field(default_factory=dict)
    breakers: dict[str, BreakerState] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    watchers: int = 0

    @classmethod
    def of(cls, runtime: Runtime) -> InMemory:
        engines = runtime.engines
        now = cls(active_calls=len(runtime.calls.active),
                  ready=engines is not None and not runtime.draining,
                  loop_lag=runtime.loop_lag.stats(), watchers=runtime.live.watchers)
        if engines is not None:
            now.queued = engines.workers.queued()
            if isinstance(engines.tts, FailoverTts):
                now.tts_switches = dict(engines.tts.switches)
            for slot, engine in (("tts", engines.tts), ("llm", engines.agent.llm)):
                if isinstance(engine, FailsOver):
                    now.breakers[slot] = engine.breaker.state
        return now


Buckets = tuple[list[tuple[str, float]], float]  # (le, cumulative count) pairs, the sum


class ApplianceCollector(Collector):
    def __init__(self, now: InMemory, outcomes: dict[str, int],
                 histograms: dict[str, Buckets]) -> None:
        self.now = now
        self.outcomes = outcomes
        self.histograms = histograms

    def collect(self) -> Iterator[Any]:
        now = self.now
        yield GaugeMetricFamily("appliance_active_calls", "Calls in progress",
                                value=now.active_calls)
        yield GaugeMetricFamily("appliance_ready", "1 when models are loaded and not draining",
                                value=int(now.ready))
        lag = GaugeMetricFamily("appliance_loop_lag_seconds", "Event-loop lag",
                                labels=["quantile"])
        for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms"), ("1", "max_ms")):
            lag.add_metric([quantile], float(now.loop_lag[key]) / 1000)
        yield lag
        yield GaugeMetricFamily("appliance_live_watchers", "Live-page streams open",
                                value=now.watchers)
        switches = CounterMetricFamily(
            "appliance_tts_provider_switches", "Changes of the voice speaking (ElevenLabs ↔ "
            "Piper) by cause", labels=["from", "to", "reason"])
        for (old, new, reason), count in sorted(now.tts_switches.items()):
            switches.add_metric([old, new, reason], count)
        yield switches
        breaker = GaugeMetricFamily(
            "appliance_breaker_state", "Fail-over circuit breakers: 1 for the current state",
            labels=["breaker", "state"])
        for name, state in sorted(now.breakers.items()):
            for each in BreakerState:
                breaker.add_metric([name, each.value], float(each is state))
        yield breaker
        queued = GaugeMetricFamily("appliance_worker_queue_depth",
                                   "Jobs waiting for a worker thread, per pool", labels=["pool"])
        for pool, depth in sorted(now.queued.items()):
            queued.add_metric([pool], depth)
        yield queued
        calls = CounterMetricFamily("appliance_calls", "Calls by outcome (status)",
                                    labels=["outcome"])
        for status, count in self.outcomes.items():
            calls.add_metric([status], count)
        yield calls
        buckets, total = self.histograms["v2v_s"]
        yield HistogramMetricFamily("appliance_voice_to_voice_seconds",
                                    "Caller stops speaking to first agent audio",
                                    buckets=buckets, sum_value=total)
        stage = HistogramMetricFamily("appliance_stage_seconds", "Per-stage turn latency",
                                      labels=["stage"])
        for column in STAGES:
            buckets, total = self.histograms[column]
            stage.add_metric([column.removesuffix("_s")], buckets, total)
        yield stage


async def _buckets(log: CallLogReader, column: str) -> Buckets:
    sums = ", ".join(f"sum(CASE WHEN {column} <= {b} THEN 1 ELSE 0 END) AS le{i}"
                     for i, b in enumerate(BUCKETS))
    row = (await log.rows(f"SELECT count({column}) AS n, coalesce(sum({column}), 0) AS total, "
                          f"{sums} FROM turn_metrics WHERE {column} IS NOT NULL"))[0]
    buckets = [(str(b), float(row[f"le{i}"] or 0)) for i, b in enumerate(BUCKETS)]
    return [*buckets, ("+Inf", float(row["n"]))], float(row["total"])


async def render(now: InMemory, log: CallLogReader) -> bytes:
    outcomes = {r["status"] or "unknown": int(r["n"]) for r in await log.rows(
        "SELECT status, count(*) AS n FROM calls GROUP BY status")}
    histograms = {column: await _buckets(log, column) for column in ("v2v_s", *STAGES)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(now, outcomes, histograms))
    return generate_latest(registry)


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Any API token or console session may scrape; ``metrics_open`` lifts that for a scraper
    on a private network."""
    console = console_of(request)
    if not console.settings.metrics_open and await authenticate(request) is None:
        raise NotAuthorizedException("send an API token: appliance tokens create prometheus")
    body = await render(InMemory.of(console.runtime), console.call_log)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@get("/healthz/live", include_in_schema=False)
async def live() -> dict[str, str]:
    """The process answers: its event loop runs."""
    return {"status": "alive"}


@get("/healthz/ready", include_in_schema=False)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Send calls here? Not while models load, after a failed load, or while draining."""
    runtime = console_of(request).runtime
    if runtime.draining:
        return Response({"status": "draining"}, status_code=503)
    if runtime.engines is None:
        state = "failed" if runtime.load_error else "loading"
        return Response({"status": state}, status_code=503)
    return Response({"status": "ready"})
