"""``appliance messages list``: the messages callers left, newest first."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any

from appliance.config import Settings
from appliance.store.calls import SqliteCallStore


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("messages", help="messages callers left (take-a-message)")
    verbs = parser.add_subparsers(dest="messages_verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="the newest messages first")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    parser.set_defaults(func=run)


async def _read(settings: Settings, limit: int) -> list[dict[str, Any]]:
    store = SqliteCallStore(settings.db_path)
    await store.open()
    try:
        return await store.messages(limit)
    finally:
        await store.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    messages = asyncio.run(_read(settings, args.limit))
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages:
        print("no messages")
    for m in messages:
        when = datetime.fromtimestamp(m["at"]).strftime("%Y-%m-%d %H:%M")
        sent = "" if not m["delivery_error"] else f"  (webhook failed: {m['delivery_error']})"
        print(f"{when}  {m['name']}  call back {m['callback_number'] or 'unknown'}  "
              f"[call {m['call_sid']}]{sent}\n    {m['message']}")
    return 0
