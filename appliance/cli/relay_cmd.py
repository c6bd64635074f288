"""``appliance relay-call``: talk to a running appliance in ConversationRelay mode, as Twilio does.

Text in, streamed text out: what Twilio's speech-to-text would send and what its text-to-speech
would read. This module turns flags into ``RelayOptions`` and the ``RelayReport`` into output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from appliance.caller.relay_sim import (
    RelayOptions,
    RelayReport,
    RelayTurnReport,
    TokenSink,
    run_relay_call,
)
from appliance.caller.report import CallFailed
from appliance.config import Settings

DTMF_KEYS = set("0123456789*#")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "relay-call",
        help="place a simulated ConversationRelay call to a running appliance",
        description="Call a running appliance (mode conversation-relay) as Twilio would: signed "
        "webhook, relay socket, `setup`, then one `prompt` per --say. Prints each reply as it "
        "streams and its time to first token. Exit status: 0 every prompt answered, 1 some "
        "prompt unanswered (or the call was not connected), 2 failure.",
    )
    add = parser.add_argument
    add("--url", help="where the server listens (default: http://HOST:PORT from settings)")
    add("--say", dest="prompts", action="append", default=[], metavar="TEXT",
        help="what the caller says (repeatable, in order)")
    add("--dtmf", default="", type=_digits, metavar="DIGITS",
        help="press these keys before the first prompt")
    add("--json", action="store_true", help="print one JSON object")
    add("--turn-timeout", type=float, default=30.0, metavar="S",
        help="give up waiting for a reply after S seconds (default 30)")
    parser.set_defaults(func=relay_call)


def _digits(value: str) -> str:
    if not set(value) <= DTMF_KEYS:
        raise argparse.ArgumentTypeError(f"DTMF keys are 0-9, * and #: {value!r}")
    return value


def relay_call(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {"base_url": args.url} if args.url else {}
    options = RelayOptions.from_settings(settings, prompts=tuple(args.prompts), dtmf=args.dtmf,
                                         turn_timeout_s=args.turn_timeout, **overrides)
    try:
        report = asyncio.run(run_relay_call(options, None if args.json else _printer()))
    except CallFailed as err:
        print(f"appliance relay-call: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_summary(report)
    return 0 if report.ok else 1


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f} s"


def _printer() -> TokenSink:
    """Print each reply as its tokens arrive, then its timings."""
    current: list[RelayTurnReport] = []

    def sink(turn: RelayTurnReport, token: str) -> None:
        if not current or current[-1] is not turn:
            current.append(turn)
            print(f"caller: {turn.said!r}" if turn.said else "caller pressed keys")
            print("agent:  ", end="")
        if token:
            print(token, end="", flush=True)
        else:
            print(f"\n        first token {_seconds(turn.first_token_s)}, "
                  f"whole reply {_seconds(turn.reply_s)}")

    return sink


def print_summary(report: RelayReport) -> None:
    if report.rejected is not None:
        print(f"call {report.call_sid} not connected: the server answered {report.rejected}")
        return
    for turn in report.turns:
        if not turn.reply:
            print(f"caller: {turn.said!r}\nagent:  no reply"
                  + (" (timed out)" if turn.timed_out else ""))
    if report.handoff is not None:
        print(f"session ended by the agent: {report.handoff}")
        if report.after:
            print(f"then Twilio runs: {report.after}")
    answered = sum(bool(turn.reply) for turn in report.turns)
    print(f"call {report.call_sid}: {answered}/{len(report.turns)} prompts answered")
