"""``appliance call``: ring a running appliance exactly as Twilio would and report every turn.

The demo, the end-to-end driver and the benchmark's caller share ``run_call``; this module only
turns flags into ``CallOptions`` and the ``CallReport`` into text or JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from appliance.caller.audio_source import AudioSourceError, Utterance, from_texts, from_wav
from appliance.caller.report import CallFailed, CallOptions, CallReport
from appliance.caller.twilio_sim import run_call
from appliance.config import Settings

DTMF_KEYS = set("0123456789*#")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "call",
        help="place a simulated Twilio call to a running appliance",
        description="Call a running appliance as Twilio would: signed webhook, Media Streams "
        "socket, real-time audio. The caller waits for the greeting, speaks each --say/--wav in "
        "order, waits for each reply and prints voice-to-voice latency. Exit status: 0 every "
        "turn answered, 1 some turn unanswered (or the call was not connected), 2 failure.",
    )
    add = parser.add_argument
    add("--url", help="where the server listens (default: http://HOST:PORT from settings)")
    add("--say", dest="script", action="append", type=_tagged("say"), metavar="TEXT",
        help="say TEXT, spoken by the local Piper voice (repeatable)")
    add("--wav", dest="script", action="append", type=_tagged("wav"), metavar="FILE",
        help="say the speech in a WAV file of any rate (repeatable)")
    add("--interrupt-after", type=int, metavar="MS",
        help="barge in: start the next utterance MS ms after each reply starts")
    add("--dtmf", default="", type=_digits, metavar="DIGITS",
        help="press these keys once the greeting has played")
    add("--out", metavar="FILE.wav", help="save what the caller heard (8 kHz WAV)")
    add("--json", action="store_true", help="print one JSON object")
    add("--turn-timeout", type=float, default=20.0, metavar="S",
        help="give up waiting for a reply after S seconds (default 20)")
    parser.set_defaults(func=call)


def _tagged(kind: str) -> Callable[[str], tuple[str, str]]:
    """Keep --say and --wav in one list, in command-line order."""

    def tag(value: str) -> tuple[str, str]:
        return kind, value

    tag.__name__ = kind
    return tag


def _digits(value: str) -> str:
    if not set(value) <= DTMF_KEYS:
        raise argparse.ArgumentTypeError(f"DTMF keys are 0-9, * and #: {value!r}")
    return value


def prepare(script: list[tuple[str, str]], settings: Settings) -> tuple[Utterance, ...]:
    """Load WAVs and speak texts (one Piper voice for all of them), keeping the script's order."""
    texts = [value for kind, value in script if kind == "say"]
    voice = settings.tts_voice or None
    spoken = iter(from_texts(texts, voice, settings.tts_threads) if texts else [])
    return tuple(next(spoken) if kind == "say" else from_wav(value) for kind, value in script)


def call(args: argparse.Namespace, settings: Settings) -> int:
    try:
        utterances = prepare(args.script or [], settings)
    except AudioSourceError as err:
        print(f"appliance call: {err}", file=sys.stderr)
        return 2
    overrides = {"base_url": args.url} if args.url else {}
    options = CallOptions.from_settings(
        settings,
        utterances=utterances,
        interrupt_after_s=None if args.interrupt_after is None else args.interrupt_after / 1000,
        dtmf=args.dtmf,
        out=args.out,
        turn_timeout_s=args.turn_timeout,
        **overrides,
    )
    try:
        report = asyncio.run(run_call(options))
    except CallFailed as err:
        print(f"appliance call: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report)
    return 0 if report.ok else 1


def _seconds(value: float | None) -> str:
    return "no reply" if value is None else f"{value:.2f} s"


def print_report(report: CallReport) -> None:
    print(f"call {report.call_sid}")
    if report.rejected is not None:
        print(f"not connected: the server answered {report.rejected}")
        return
    said = f"  {report.greeting!r}" if report.greeting else ""
    print(f"greeting: {_seconds(report.greeting_s)}{said}")
    for number, turn in enumerate(report.turns, 1):
        print(f"turn {number}: caller said {turn.said!r}")
        if report.server is not None:
            print(f"  server heard: {turn.transcript!r}")
            print(f"  agent said:   {turn.agent!r}")
            if turn.interrupted:
                print(f"  interrupted; caller heard {turn.heard!r}")
        flags = ["clear received"] * turn.clear_received + ["timed out"] * turn.timed_out
        shown = f"  [{', '.join(flags)}]" if flags else ""
        print(f"  voice-to-voice: {_seconds(turn.v2v_s)}{shown}")
    if report.server is None:
        print("(server record unavailable)")
    if report.ended_by_server:
        print("the server hung up")
    if report.out:
        print(f"audio saved to {report.out}")
    answered = sum(turn.answered for turn in report.turns)
    print(f"{answered}/{len(report.turns)} turns answered")
