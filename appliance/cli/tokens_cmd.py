"""``appliance tokens``: API tokens for scripts (bearer tokens for /api/v1 and /metrics)."""

from __future__ import annotations

import argparse
from datetime import datetime

from appliance.auth import ROLES
from appliance.cli.users_cmd import CLI_ACTOR, accounts, guarded
from appliance.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tokens", help="manage API tokens (shown once, stored hashed)")
    verbs = parser.add_subparsers(dest="tokens_verb", required=True, metavar="ACTION")
    create = verbs.add_parser("create", help="make a token and print it once")
    create.add_argument("name", help="what the token is for, e.g. crm-sync")
    create.add_argument("--role", choices=ROLES, default="viewer")
    create.set_defaults(func=guarded(create_token))
    verbs.add_parser("list", help="list tokens (never their secrets)").set_defaults(
        func=guarded(list_tokens))
    revoke = verbs.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=guarded(revoke_token))


def create_token(args: argparse.Namespace, settings: Settings) -> int:
    token, secret = accounts(settings).create_token(args.name, args.role, actor=CLI_ACTOR)
    print(secret)
    print(f"token {token.id} ({token.role}) created: copy it now, it is not shown again")
    return 0


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def list_tokens(args: argparse.Namespace, settings: Settings) -> int:
    for t in accounts(settings).tokens():
        state = f"revoked {_when(t.revoked)}" if t.revoked else "active"
        print(f"{t.id:4d}  {t.name:20} {t.role:7} {t.prefix}…  created {_when(t.created)}  "
              f"last used {_when(t.last_used)}  {state}")
    return 0


def revoke_token(args: argparse.Namespace, settings: Settings) -> int:
    accounts(settings).revoke_token(args.id, actor=CLI_ACTOR)
    print(f"revoked token {args.id}")
    return 0
