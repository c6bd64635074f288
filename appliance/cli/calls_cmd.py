"""``appliance calls purge``: apply the retention policy now, on the configured call log."""

from __future__ import annotations

import argparse
import asyncio
import sys

from appliance.auth import Accounts, open_accounts_db
from appliance.config import Settings
from appliance.recordings import Recordings
from appliance.store.reader import call_log_reader
from appliance.store.retention import purge_calls


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("calls", help="the call log: retention")
    verbs = parser.add_subparsers(dest="calls_verb", required=True, metavar="ACTION")
    purge = verbs.add_parser("purge", help="delete calls older than N days (transcripts, "
                             "metrics, events, messages, recordings)")
    purge.add_argument("--older-than-days", type=float,
                       help="default: the retention_days setting")
    purge.set_defaults(func=purge_cmd)


async def purge(settings: Settings, days: float) -> list[str]:
    log = call_log_reader(settings)
    await log.open()
    try:
        return await purge_calls(log, days)
    finally:
        await log.close()


def purge_cmd(args: argparse.Namespace, settings: Settings) -> int:
    days = args.older_than_days if args.older_than_days is not None else settings.retention_days
    if not days or days <= 0:
        print("appliance: give --older-than-days N or set APPLIANCE_RETENTION_DAYS",
              file=sys.stderr)
        return 2
    sids = asyncio.run(purge(settings, days))
    db = open_accounts_db(settings.db_path)
    recordings = Recordings(settings.recordings_path).purge(days, sids)
    Accounts(db).audit("cli", "calls.purge", f"{days:g} days", calls=len(sids),
                       recordings=recordings)
    db.conn.close()
    print(f"purged {len(sids)} call(s) and {recordings} recording(s) older than {days:g} days")
    return 0
