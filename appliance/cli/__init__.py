"""The ``appliance`` command. Each verb lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from appliance.cli import (
    ask_cmd,
    bench_cmd,
    call_cmd,
    calls_cmd,
    config_cmd,
    doctor_cmd,
    eval_cmd,
    kb_cmd,
    messages_cmd,
    models_cmd,
    relay_cmd,
    serve_cmd,
    tokens_cmd,
    users_cmd,
)
from appliance.config import ConfigError, Settings, load_settings, setup_logging

VERBS = (serve_cmd, call_cmd, relay_cmd, ask_cmd, eval_cmd, kb_cmd, messages_cmd, bench_cmd,
         models_cmd, config_cmd, doctor_cmd, users_cmd, tokens_cmd, calls_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="Self-hosted AI phone agent for Twilio."
    )
    parser.add_argument("--config", help="TOML settings file (else $APPLIANCE_CONFIG)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.register(sub)
    return parser


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Load settings for a verb, turning a bad value into a clean exit naming the setting."""
    try:
        return load_settings(args.config, **overrides)
    except ConfigError as err:
        sys.exit(f"appliance: configuration error: {err}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args, **getattr(args, "overrides", lambda a: {})(args))
    setup_logging(settings)
    return int(args.func(args, settings) or 0)
