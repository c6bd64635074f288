"""``appliance config show``: the effective settings, secrets redacted."""

from __future__ import annotations

import argparse
import json

from appliance.config import Settings, env_name


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="inspect settings")
    verbs = parser.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    show = verbs.add_parser("show", help="print the effective settings (secrets redacted)")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(func=show_config)


def show_config(args: argparse.Namespace, settings: Settings) -> int:
    values = settings.redacted()
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    width = max(len(env_name(k)) for k in values)
    for key, value in values.items():
        shown = value.replace("\n", " ") if isinstance(value, str) else value
        print(f"{env_name(key):<{width}}  {shown}")
    return 0
