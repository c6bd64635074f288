"""Run the benchmark: a server (spawned, or at ``--url``), then levels of concurrent callers.

The server runs as its own ``appliance serve`` process on a free loopback port, so its CPU and
memory are measured apart from the callers'. It loads this process's settings exactly (written
to a TOML file), except: a fresh data dir (with a copy of the knowledge base, so answers are the
deployment's), Media Streams mode, enough call slots for the largest level, and a generated
Twilio auth token shared with the callers: every webhook and media socket is signed and checked,
as in production.

All callers of a level run in this process's one event loop at real-time pacing, starting a
few hundred ms apart. Per level the runner also samples: the server's CPU and RSS (/proc), GPU
memory (nvidia-smi), this loop's lag, /healthz round trips (the server loop's lag as seen from
outside), and the server's own loop lag where it exposes ``/api/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from appliance.bench import probes, utterances
from appliance.bench.adversary import Adversary
from appliance.bench.services import free_port
from appliance.bench.stats import LoopLag, ms, prompt_split, summarize, turn_stages
from appliance.bench.watchers import ConsoleWatchers, with_and_without
from appliance.caller.audio_source import Utterance
from appliance.caller.report import CallOptions, CallReport, new_sid, pair_turns
from appliance.caller.twilio_sim import run_call
from appliance.config import (
    ENV_PREFIX,
    SECRET_FIELDS,
    VENDOR_ENV,
    Settings,
    api_headers,
    env_name,
)

log = logging.getLogger(__name__)

SCHEMA = "appliance-bench/1"
KEY_SETTINGS = (
    "mode", "models", "stt_model", "llm_model", "tts_voice", "device", "max_calls",
    "stt_threads", "stt_instances", "stt_beam_size", "llm_threads", "llm_batch_threads",
    "llm_instances", "llm_context", "llm_max_tokens", "llm_gpu_layers", "tts_threads",
    "vad_threshold", "endpoint_silence_ms", "min_speech_ms", "kb_top_k", "kb_context_chars",
    "hold_after_ms", "speculative_stt_ms", "turn_model", "turn_complete_ms",
    "turn_incomplete_ms", "turn_threshold",
)
TALK_FOREVER_S = 24 * 3600.0  # the endless talker talks until its level ends
# 0.3 s between the talker's sentences: a pause the server acts on (transcribe, ask the turn
# model) yet no end of turn without the model's say. With no breath at all the talker cost no
# STT: nothing ended its utterance but the 20 s ceiling, and each round lasted 20 s.
BREATH_FRAMES = 15
METRICS_PATH = "/api/metrics"  # the server's own loop lag (and pid, if it tells)


class BenchError(RuntimeError):
    """The benchmark could not run (server would not start, bad URL); the message says why."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    calls: tuple[int, ...] = (1, 2, 4)
    turns: int = 3
    url: str | None = None
    stagger_s: float = 0.3
    warmup: bool = True
    turn_timeout_s: float = 20.0
    ready_timeout_s: float = 300.0
    level_pause_s: float = 2.0
    hold: bool = False  # keep the server's "one moment" hold phrase (see server_settings)
    barge_in_s: float | None = None  # callers talk over replies this long after they start
    adversary: bool = False  # each level twice: clean, then beside one misbehaving client
    console_watchers: int = 0  # each level twice: alone, then with this many Live-page viewers
    talker: bool = False  # each level again beside one caller who never stops talking
    duration_s: float | None = None  # callers take turns for this long instead of ``turns``


@dataclass
class Server:
    """Where the server is and how to reach it, whoever started it."""

    base_url: str
    settings: Settings  # what the callers sign with; the spawned server's own settings
    spawned: bool
    pid: int | None = None
    log_path: Path | None = None
    healthz: dict[str, Any] = field(default_factory=dict)


def server_settings(settings: Settings, data_dir: Path, port: int,
                    opts: BenchOptions) -> Settings:
    """The user's settings, pointed at a private data dir and port, signed with a fresh token.

    Unless ``opts.hold``, the hold phrase is off: the caller times the first voiced audio, and
    on a slow turn that would be "one moment, please", not the answer; worse, the simulated
    caller takes the quiet after it for the end of the reply and asks its next question over
    the answer. The answer's latency is what the benchmark is for.
    """
    base = f"http://127.0.0.1:{port}"
    return msgspec.structs.replace(
        settings, data_dir=str(data_dir), host="127.0.0.1", port=port, public_base_url=base,
        mode="media-streams", validate_signatures=True,
        twilio_auth_token=secrets.token_hex(16),
        twilio_account_sid=settings.twilio_account_sid or new_sid("AC"),
        max_calls=max(settings.max_calls, *opts.calls) + (1 if opts.adversary or opts.talker
                                                          else 0),
        hold_after_ms=settings.hold_after_ms if opts.hold else 0)


def settings_toml(settings: Settings) -> str:
    """Every non-secret setting as TOML, so the server loads exactly these (secrets go by env)."""
    lines = []
    for name, value in msgspec.structs.asdict(settings).items():
        if name in SECRET_FIELDS:
            continue
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{name} = {value!r}")
        elif isinstance(value, list | tuple):  # arrays of strings / numbers: JSON is TOML here
            lines.append(f"{name} = {json.dumps(list(value), ensure_ascii=False)}")
        else:
            lines.append(f"{name} = {json.dumps(str(value), ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def server_env(settings: Settings) -> dict[str, str]:
    """This environment without settings variables (the TOML file has them all), plus secrets."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(ENV_PREFIX) and k not in VENDOR_ENV}
    env.update({env_name(name): getattr(settings, name) for name in SECRET_FIELDS
                if getattr(settings, name)})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def spawned_server(settings: Settings, opts: BenchOptions) -> AsyncIterator[Server]:
    """``appliance serve`` in a subprocess with a private data dir; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        kb = settings.data_path / "kb"
        if kb.is_dir():  # the deployment's ingested documents; else the server ingests kb_dir
            shutil.copytree(kb, data / "kb")
        child = server_settings(settings, data, free_port(), opts)
        async with serve_process(child, Path(tmp), opts.ready_timeout_s) as server:
            yield server


@asynccontextmanager
async def serve_process(child: Settings, workdir: Path, ready_timeout_s: float,
                        name: str = "server") -> AsyncIterator[Server]:
    """``appliance serve`` with exactly ``child``'s settings (TOML file and secrets in its
    environment, log in ``workdir``) until it is ready; stopped after, however the block ends."""
    log_path = workdir / f"{name}.log"
    config = workdir / f"{name}.toml"
    config.write_text(settings_toml(child))
    cmd = [sys.executable, "-m", "appliance", "--config", str(config), "serve"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=server_env(child), stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(f"http://127.0.0.1:{child.port}", child, spawned=True, pid=proc.pid,
                    log_path=log_path)
    try:
        server.healthz = await wait_ready(server, ready_timeout_s, proc)
        yield server
    finally:
        await asyncio.to_thread(_stop, proc)
        if proc.returncode not in (0, -2, -15, None):
            log.warning("%s exited with %s; its log:\n%s", name, proc.returncode,
                        _tail(log_path))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def wait_ready(
    server: Server, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> dict[str, Any]:
    """Poll /healthz until the models are loaded; BenchError if it fails or takes too long."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=3, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the server exited with status {proc.returncode}:\n"
                                 f"{_tail(server.log_path) if server.log_path else ''}")
            try:
                resp = await http.get(server.base_url + "/healthz")
                body = resp.json()
                if resp.status_code == 200:
                    return body
                if body.get("status") == "failed":
                    raise BenchError(f"the server failed to load its models: {body.get('error')}")
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.25)
    raise BenchError(f"{server.base_url} not ready after {timeout_s:.0f} s (last: {body})")


@asynccontextmanager
async def external_server(
    settings: Settings, url: str, opts: BenchOptions
) -> AsyncIterator[Server]:
    server = Server(url.rstrip("/"), settings, spawned=False)
    server.healthz = await wait_ready(server, min(opts.ready_timeout_s, 30))
    yield server


class Probe:
    """/healthz round trips during a level: a loaded server answers late by its loop's lag."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, interval_s: float = 0.25) -> None:
        self.http, self.url, self.interval_s = http, base_url + "/healthz", interval_s
        self.samples: list[float] = []
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.samples, self.errors = [], 0
        self._task = asyncio.create_task(self._run(), name="healthz-probe")

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.samples

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            started = time.perf_counter()
            try:
                await self.http.get(self.url)
                self.samples.append(time.perf_counter() - started)
            except httpx.HTTPError:
                self.errors += 1


async def server_metrics(http: httpx.AsyncClient, base_url: str,
                         reset: bool = False) -> dict[str, Any] | None:
    """The server's ``GET /api/metrics`` (loop lag since the last reset), or None if absent."""
    try:
        resp = await http.get(base_url + METRICS_PATH, params={"reset": "true"} if reset else None)
        body = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def server_lag(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """``/api/metrics``' loop lag in the shape of the other lag figures (ms)."""
    lag = (body or {}).get("loop_lag")
    if not isinstance(lag, dict) or not lag.get("samples"):
        return None
    return {"n": lag.get("samples"), "p50": lag.get("p50_ms"), "p95": None,
            "p99": lag.get("p99_ms"), "max": lag.get("max_ms")}


def reply_metrics(report: CallReport) -> list[dict[str, Any] | None]:
    """The server's metrics of the first reply to each caller turn, in the caller's order."""
    return [turn.metrics for turn in pair_turns(report.server or {}, len(report.turns))[1]]


def level_result(calls: int, outcomes: Sequence[CallReport | BaseException],
                 wall_s: float) -> dict[str, Any]:
    """Latency and outcome figures for one level's calls."""
    heard: list[float | None] = []
    received: list[float | None] = []
    barge_in: list[float | None] = []
    stages: dict[str, list[float | None]] = {}
    prompts: dict[str, list[float | None]] = {}  # generated answers only
    errors: list[str] = []
    completed = rejected = answered = total = ungrounded = early = 0
    boxes: Counter[str] = Counter()  # which box held each call (a shared call log says)
    for number, outcome in enumerate(outcomes, 1):
        if isinstance(outcome, BaseException):
            errors.append(f"call {number}: {type(outcome).__name__}: {outcome}")
            continue
        if outcome.rejected is not None:
            rejected += 1
            errors.append(f"call {number}: rejected: {outcome.rejected}")
            continue
        completed += outcome.ok
        if box := ((outcome.server or {}).get("call") or {}).get("box"):
            boxes[str(box)] += 1
        total += len(outcome.turns)
        ungrounded += sum(1 for e in (outcome.server or {}).get("events") or []
                          if isinstance(e, dict) and e.get("type") == "ungrounded")
        for turn, metrics in zip(outcome.turns, reply_metrics(outcome), strict=True):
            answered += turn.answered
            if not turn.answered:
                errors.append(f"call {number}: no reply to {turn.said!r}"
                              + (" (timed out)" if turn.timed_out else ""))
            heard.append(turn.v2v_played_s)
            received.append(turn.v2v_s)
            barge_in.append(turn.barge_in_s)
            early += bool((metrics or {}).get("speculative"))
            values = turn_stages(metrics or {})
            server_v2v = values.get("server_v2v_s")
            values["transport_s"] = (turn.v2v_played_s - server_v2v
                                     if turn.v2v_played_s is not None and server_v2v is not None
                                     else None)
            for key, value in values.items():
                stages.setdefault(key, []).append(value)
            for key, value in (prompt_split(metrics or {}) or {}).items():
                prompts.setdefault(key, []).append(value)
        if outcome.greeting_s is None:
            errors.append(f"call {number}: no greeting heard")
    return {
        "calls": calls,
        "completed": completed,
        "failed": calls - completed,
        "rejected": rejected,
        "turns_answered": answered,
        "turns_total": total,
        "replies_replaced": ungrounded,  # the grounding guard replaced the model's words
        "answered_early": early,  # answers worked out at the pause, before the turn's end
        "wall_s": round(wall_s, 1),
        "v2v_heard_s": summarize(heard).to_json(),
        "v2v_received_s": summarize(received).to_json(),
        "barge_in_s": summarize(barge_in).to_json(),
        "stages": {key: summarize(values).to_json() for key, values in stages.items()},
        **({"prompt": {key: summarize(values).to_json() for key, values in prompts.items()}}
           if prompts else {}),
        "errors": errors,
        **({"boxes": dict(sorted(boxes.items()))} if boxes else {}),
    }


def max_turns(duration_s: float) -> int:
    """Enough utterances for ``duration_s`` of turns: a turn takes well over 2 s (the shortest
    line is 1.5 s, then the reply), so the caller stops on its clock, never for want of lines."""
    return max(1, math.ceil(duration_s / 2))


def versus(level: dict[str, Any], clean: dict[str, Any]) -> dict[str, float | None]:
    """``level``'s good-call latencies as ratios of the clean level's (1.2: 20 % slower)."""
    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, stat: str) -> float | None:
        x, y = (a or {}).get(stat), (b or {}).get(stat)
        return round(x / y, 2) if x is not None and y else None

    pairs = {"v2v_heard": (level["v2v_heard_s"], clean["v2v_heard_s"]),
             **{key.removesuffix("_s"): (level["stages"].get(key), clean["stages"].get(key))
                for key in ("stt_s", "endpoint_s")}}
    out = {f"{name}_{stat}": ratio(a, b, stat) for name, (a, b) in pairs.items()
           for stat in ("p50", "p95")}
    # the server's memory at the end against its warm level (the clean level's end)
    out["rss_end"] = ratio(level.get("server"), clean.get("server"), "rss_end_mb")
    return out


@dataclass
class Bench:
    """One benchmark run against one server."""

    server: Server
    opts: BenchOptions
    lines: dict[str, Utterance]
    http: httpx.AsyncClient
    lag: LoopLag = field(default_factory=LoopLag)

    def call_options(self, index: int, turns: int) -> CallOptions:
        measured = index >= 0
        if measured and self.opts.duration_s is not None:
            turns = max_turns(self.opts.duration_s)
        texts = utterances.script(index, turns) if measured else [utterances.WARMUP_LINE]
        said = tuple(self.lines[t] for t in texts)
        return CallOptions.from_settings(
            self.server.settings, base_url=self.server.base_url, utterances=said,
            turn_timeout_s=self.opts.turn_timeout_s,
            interrupt_after_s=self.opts.barge_in_s if measured else None,
            stop_after_s=self.opts.duration_s if measured else None)

    def adversary(self) -> Adversary:
        """The misbehaving client; its talker says the bench's lines with a breath between."""
        breath = utterances.SILENCE * BREATH_FRAMES
        voice = b"".join(utterances.speech(self.lines[t]) + breath for t in utterances.LINES)
        return Adversary(self.server.base_url, self.server.settings, self.http, voice)

    async def one_call(self, index: int, turns: int, delay_s: float) -> CallReport:
        await asyncio.sleep(delay_s)
        return await run_call(self.call_options(index, turns), self.http)

    async def level_beside(self, calls: int, turns: int,
                           companion: Coroutine[Any, Any, None]) -> dict[str, Any]:
        """:meth:`level` with ``companion`` running throughout, cancelled once the calls end."""
        running = asyncio.create_task(companion)
        try:
            return await self.level(calls, turns)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    async def attacked_level(self, calls: int, turns: int) -> dict[str, Any]:
        """:meth:`level` with one :class:`Adversary` attacking throughout; what it tried, how
        the server ended its sockets, the server's refusals by reason and RSS after it left."""
        before = await server_metrics(self.http, self.server.base_url) or {}
        adversary = self.adversary()
        result = await self.level_beside(calls, turns, adversary.run())
        await asyncio.sleep(self.opts.level_pause_s + self.server.settings.start_timeout_s)
        after = await server_metrics(self.http, self.server.base_url) or {}
        refused = Counter(after.get("refused_sockets", {}))
        refused.subtract(before.get("refused_sockets", {}))
        settled = probes.process_sample(self.server.pid) if self.server.pid else None
        result["adversary"] = {**adversary.result(),
                               "refused_sockets": {k: v for k, v in refused.items() if v},
                               "slots_used_after": after.get("slots_used"),
                               "rss_after_mb": settled and round(settled.rss_mb, 1)}
        return result

    async def watched_level(self, calls: int, turns: int) -> dict[str, Any]:
        """:meth:`level` with ``opts.console_watchers`` Live-page viewers throughout."""
        watchers = ConsoleWatchers(self.server.base_url, api_headers(self.server.settings),
                                   self.opts.console_watchers)
        result = await self.level_beside(calls, turns, watchers.run())
        result["console_watchers"] = watchers.result()
        return result

    async def talker_level(self, calls: int, turns: int) -> dict[str, Any]:
        """:meth:`level` beside one admitted caller who talks without a pause from start to end:
        whether a call that never stops talking takes more than its share of the STT, VAD and
        turn workers shows in the good calls' STT and end-of-turn times against the clean
        level's."""
        talker = self.adversary()
        ending: list[str] = []

        async def talk() -> None:
            ending.append(await talker.talk(TALK_FOREVER_S))

        result = await self.level_beside(calls, turns, talk())
        result["talker"] = {"ending": ending[0] if ending else "talking until the level ended"}
        return result

    async def level(self, calls: int, turns: int, warmup: bool = False) -> dict[str, Any]:
        """``calls`` callers at once (staggered), ``turns`` turns each; figures for the level."""
        pid = self.server.pid
        hook = await server_metrics(self.http, self.server.base_url, reset=True)
        if pid is None and hook and isinstance(hook.get("pid"), int):
            pid = hook["pid"] if (probes.PROC / str(hook["pid"])).exists() else None
        window = probes.Window(pid)
        probe = Probe(self.http, self.server.base_url)
        self.lag.reset()
        window.start()
        probe.start()
        started = time.monotonic()
        try:
            outcomes = await asyncio.gather(
                *(self.one_call(-1 if warmup else i, turns, i * self.opts.stagger_s)
                  for i in range(calls)),
                return_exceptions=True)
        except BaseException:  # interrupted: the samplers must not outlive the HTTP client
            await probe.stop()
            await window.stop()
            raise
        wall = time.monotonic() - started
        rtts = await probe.stop()
        resources = await window.stop()
        lag_samples = self.lag.reset()
        hook_after = await server_metrics(self.http, self.server.base_url)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # KeyboardInterrupt, cancellation: not a failed call
        result = level_result(calls, outcomes, wall)
        result["loop_lag_ms"] = {
            "server": server_lag(hook_after),
            "healthz_rtt": ms(summarize(rtts)),
            "bench": ms(summarize(lag_samples)),
        }
        result.update(resources)
        result["call_reports"] = [o.to_json() if isinstance(o, CallReport) else None
                                  for o in outcomes]
        return result


async def run_bench(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    """The whole benchmark: utterances, server, warm-up, each level; the JSON-able result."""
    lines = await load_lines(settings, opts)  # before the server runs
    server_cm = (external_server(settings, opts.url, opts) if opts.url
                 else spawned_server(settings, opts))
    async with server_cm as server:
        return await measure(server, opts, lines)


async def load_lines(settings: Settings, opts: BenchOptions) -> dict[str, Utterance]:
    """Every caller line the levels (and the warm-up) will speak, synthesized or cached."""
    turns = max_turns(opts.duration_s) if opts.duration_s is not None else opts.turns
    needed = [t for i in range(max(opts.calls)) for t in utterances.script(i, turns)]
    needed += [utterances.WARMUP_LINE, *utterances.LINES]  # the talker says every line
    return await asyncio.to_thread(utterances.load, settings, needed)


async def measure(server: Server, opts: BenchOptions, lines: dict[str, Utterance],
                  also_warm: Sequence[Server] = ()) -> dict[str, Any]:
    """Warm-up, then each level against ``server``'s webhook; the JSON-able result.

    ``also_warm``: further boxes behind the same webhook, each warmed by a call to its own
    webhook, so the first call handed to one pays no start-up cost the others did not.
    """
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": probes.machine_info(),
        "options": {"calls": list(opts.calls), "turns": opts.turns, "stagger_s": opts.stagger_s,
                    "warmup": opts.warmup, "url": opts.url, "hold": opts.hold,
                    "barge_in_s": opts.barge_in_s, "adversary": opts.adversary,
                    "console_watchers": opts.console_watchers, "talker": opts.talker,
                    "duration_s": opts.duration_s},
    }
    async with httpx.AsyncClient(timeout=10, trust_env=False,
                                 headers=api_headers(server.settings)) as http:
        result["server"] = {"url": server.base_url, "spawned": server.spawned, "pid": server.pid,
                            "models": server.healthz.get("models", []),
                            "max_calls": server.healthz.get("max_calls"),
                            "metrics_hook": await server_metrics(http, server.base_url) is not None}
        used = server.settings.redacted()
        result["settings"] = {k: used[k] for k in KEY_SETTINGS if k in used}
        result["settings_note"] = ("the spawned server's settings" if server.spawned else
                                   "this machine's settings; the server at --url may differ")
        bench = Bench(server, opts, lines, http)
        bench.lag.start()
        try:
            result["warmup"] = None
            if opts.warmup:  # the first turn after start-up fills caches no later call pays for
                log.info("warm-up call (not counted)")
                result["warmup"] = await bench.level(1, 1, warmup=True)
                for other in also_warm:
                    log.info("warm-up call to %s (not counted)", other.base_url)
                    await Bench(other, opts, lines, http).level(1, 1, warmup=True)
            result["levels"] = []
            for calls in opts.calls:
                await asyncio.sleep(opts.level_pause_s)
                log.info("level: %d concurrent call(s), %d turn(s) each", calls, opts.turns)
                clean = await bench.level(calls, opts.turns)
                result["levels"].append(clean)
                if opts.console_watchers:
                    await asyncio.sleep(opts.level_pause_s)
                    log.info("the same level with %d console viewer(s) watching live",
                             opts.console_watchers)
                    watched = await bench.watched_level(calls, opts.turns)
                    watched["console_watchers"]["versus_without"] = with_and_without(clean, watched)
                    result["levels"].append(watched)
                if opts.adversary:
                    await asyncio.sleep(opts.level_pause_s)
                    log.info("the same level beside one misbehaving client")
                    attacked = await bench.attacked_level(calls, opts.turns)
                    result["levels"].append(attacked | {"vs_clean": versus(attacked, clean)})
                if opts.talker:
                    await asyncio.sleep(opts.level_pause_s)
                    log.info("the same level beside one caller who never stops talking")
                    talked = await bench.talker_level(calls, opts.turns)
                    result["levels"].append(talked | {"vs_clean": versus(talked, clean)})
        finally:
            await bench.lag.stop()
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result
