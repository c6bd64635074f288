"""``appliance bench``: concurrent simulated callers against a server; latency, lag and load."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from appliance.bench import BenchError, BenchOptions, report, run_bench
from appliance.bench.cluster import ClusterOptions, run_cluster_bench
from appliance.caller.audio_source import AudioSourceError
from appliance.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure voice-to-voice latency and load with concurrent simulated callers",
        description="Start the server (`appliance serve` on a free loopback port, or use --url), "
        "then for each concurrency level place that many simulated Twilio calls at once, each "
        "speaking --turns fixed questions in real time. Prints voice-to-voice latency as the "
        "caller hears it, each stage's share, event-loop lag, CPU, memory and GPU memory. "
        "Exit status: 0 every call completed, 1 some call failed, 2 the benchmark could not run.",
    )
    add = parser.add_argument
    add("--calls", type=_levels, default=(1, 2, 4), metavar="N,N,...",
        help="concurrency levels, run in order (default 1,2,4)")
    add("--turns", type=_positive, default=3, metavar="N", help="turns per call (default 3)")
    add("--json", metavar="FILE", help="write the full result as JSON")
    add("--plot", metavar="FILE.png", help="plot latency vs concurrency, stacked by stage")
    add("--url", help="benchmark a running server instead (it must share this machine's "
        "TWILIO_AUTH_TOKEN and public base URL)")
    add("--stagger-ms", type=int, default=300, metavar="MS",
        help="start the callers of a level this far apart (default 300)")
    add("--no-warmup", dest="warmup", action="store_false",
        help="skip the uncounted warm-up call before the first level")
    add("--hold", action="store_true",
        help="keep the spawned server's hold phrase (off by default: on a slow turn the caller "
        "would time \"one moment, please\" instead of the answer)")
    add("--barge-in-ms", type=_positive, metavar="MS",
        help="callers talk over every reply but the last this long after it starts playing; "
        "reports how soon the reply stops (needs --turns 2 or more)")
    add("--adversary", action="store_true",
        help="run each level twice: clean, then beside one misbehaving socket client cycling "
        "through attacks (idle, forged, garbage, socket bursts, audio flood, endless talker)")
    add("--console-watchers", type=_positive, default=0, metavar="N",
        help="run each level twice: alone, then with N logged-in console viewers holding the "
        "Live page's event stream open and reloading the Live page and calls list; reports "
        "server loop lag p99 and voice-to-voice p95 side by side")
    add("--talker", action="store_true",
        help="run each level again beside one admitted caller who talks without a pause for "
        "the whole level; reports the good calls' STT and end-of-turn times against the clean "
        "run's")
    add("--duration", type=_positive, metavar="S",
        help="callers keep taking turns for S seconds instead of --turns (a soak)")
    add("--turn-timeout", type=float, default=20.0, metavar="S",
        help="give up on a reply after S seconds (default 20)")
    scale = parser.add_argument_group(
        "scale-out", "--cluster N: the same calls on N boxes sharing one model server, a Chroma "
        "server, PostgreSQL and Redis (every call rings the first box's webhook), then on one "
        "box with in-process models; all started on loopback and stopped afterwards")
    scale.add_argument("--cluster", type=_positive, metavar="N",
                       help="compare N boxes (N >= 2) with one box; needs --database-url and "
                       "--redis-url")
    scale.add_argument("--capacity", type=_positive, metavar="N",
                       help="call slots per box (default: the largest level spread over boxes)")
    scale.add_argument("--database-url", metavar="URL",
                       help="PostgreSQL the boxes share, in a fresh schema dropped afterwards "
                       "(default APPLIANCE_DATABASE_URL)")
    scale.add_argument("--redis-url", metavar="URL",
                       help="Redis the boxes share, under a fresh key prefix deleted afterwards "
                       "(default APPLIANCE_REDIS_URL)")
    scale.add_argument("--hop-prompts", type=int, default=20, metavar="N",
                       help="then time N first tokens each way, in-process vs the model server "
                       "(default 20; 0 skips)")
    scale.add_argument("--logs", metavar="DIR", type=Path,
                       help="keep the model server's, Chroma's and each box's log in DIR")
    parser.set_defaults(func=bench)


def _levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive counts like 1,2,4: {value!r}")
    return levels


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number: {value!r}")
    return int(value)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (for the JSON and the README)."""
    parts = ["appliance"] + (["--config", args.config] if args.config else []) + [
        "bench", "--calls", ",".join(map(str, args.calls))]
    parts += ["--duration", str(args.duration)] if args.duration else ["--turns", str(args.turns)]
    if args.url:
        parts += ["--url", args.url]
    if args.stagger_ms != 300:
        parts += ["--stagger-ms", str(args.stagger_ms)]
    if not args.warmup:
        parts.append("--no-warmup")
    if args.hold:
        parts.append("--hold")
    if args.barge_in_ms:
        parts += ["--barge-in-ms", str(args.barge_in_ms)]
    if args.adversary:
        parts.append("--adversary")
    if args.talker:
        parts.append("--talker")
    if args.console_watchers:
        parts += ["--console-watchers", str(args.console_watchers)]
    if args.cluster:
        parts += ["--cluster", str(args.cluster)]
        if args.capacity:
            parts += ["--capacity", str(args.capacity)]
        if args.hop_prompts != 20:
            parts += ["--hop-prompts", str(args.hop_prompts)]
    return " ".join(parts)  # the database and Redis URLs are secrets: never in the JSON


def bench(args: argparse.Namespace, settings: Settings) -> int:
    opts = BenchOptions(calls=args.calls, turns=args.turns, url=args.url,
                        stagger_s=args.stagger_ms / 1000, warmup=args.warmup,
                        turn_timeout_s=args.turn_timeout, hold=args.hold,
                        barge_in_s=args.barge_in_ms / 1000 if args.barge_in_ms else None,
                        adversary=args.adversary, talker=args.talker,
                        duration_s=float(args.duration) if args.duration else None,
                        console_watchers=args.console_watchers)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the table
    if args.cluster:
        return cluster_bench(args, settings, opts)
    try:
        result = asyncio.run(run_bench(settings, opts))
    except (BenchError, AudioSourceError) as err:
        print(f"appliance bench: {err}", file=sys.stderr)
        return 2
    result["command"] = command_line(args)
    print(report.table(result))
    if args.json:
        report.write_json(result, args.json)
        print(f"JSON written to {args.json}")
    if args.plot:
        try:
            report.plot(result, args.plot)
            print(f"plot written to {args.plot}")
        except ImportError:
            print("appliance bench: --plot needs matplotlib (pip install 'appliance[bench]')",
                  file=sys.stderr)
            return 2
    return 0 if all(level["failed"] == 0 for level in result["levels"]) else 1


def cluster_bench(args: argparse.Namespace, settings: Settings, opts: BenchOptions) -> int:
    """``--cluster N``: N boxes sharing servers vs one box (appliance/bench/cluster.py)."""
    if (args.plot or args.adversary or args.barge_in_ms or args.talker or args.console_watchers
            or args.duration):
        print("appliance bench: --cluster measures plain calls: leave out --plot, --adversary, "
              "--talker, --console-watchers, --duration and --barge-in-ms", file=sys.stderr)
        return 2
    if args.hop_prompts == 1 or args.hop_prompts < 0:
        print("appliance bench: --hop-prompts must be 0 or at least 2", file=sys.stderr)
        return 2
    copts = ClusterOptions(boxes=args.cluster, capacity=args.capacity,
                           database_url=args.database_url or settings.database_url,
                           redis_url=args.redis_url or settings.redis_url,
                           hop_prompts=args.hop_prompts, logs=args.logs)
    try:
        result = asyncio.run(run_cluster_bench(settings, opts, copts))
    except (BenchError, AudioSourceError) as err:
        print(f"appliance bench: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("appliance bench: interrupted; every server it started was stopped",
              file=sys.stderr)
        return 130
    result["command"] = command_line(args)
    print(report.cluster_table(result))
    if args.json:
        report.write_json(result, args.json)
        print(f"JSON written to {args.json}")
    levels = [lv for setup in result["setups"].values() for lv in setup["levels"]]
    return 0 if all(level["failed"] == 0 for level in levels) else 1
