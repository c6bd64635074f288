"""``appliance users``: console accounts. The first admin is made here: there is no default."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import datetime

from appliance.auth import ROLES, AccountError, Accounts, open_accounts_db
from appliance.config import Settings

CLI_ACTOR = "cli"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("users", help="manage operator console accounts")
    verbs = parser.add_subparsers(dest="users_verb", required=True, metavar="ACTION")
    add = verbs.add_parser("add", help="create a user (asks for the password)")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input (for scripts)")
    add.set_defaults(func=guarded(add_user))
    verbs.add_parser("list", help="list users").set_defaults(func=guarded(list_users))
    remove = verbs.add_parser("remove", help="delete a user and end their sessions")
    remove.add_argument("username")
    remove.set_defaults(func=guarded(remove_user))
    passwd = verbs.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=guarded(set_password))


def accounts(settings: Settings) -> Accounts:
    return Accounts(open_accounts_db(settings.db_path))


def guarded(handler: Callable[[argparse.Namespace, Settings], int]
            ) -> Callable[[argparse.Namespace, Settings], int]:
    """Refusals (unknown user, short password...) become one line on stderr and status 1."""
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except AccountError as err:
            print(f"appliance: {err}", file=sys.stderr)
            return 1
    return run


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise AccountError("the passwords differ")
    return first


def add_user(args: argparse.Namespace, settings: Settings) -> int:
    user = accounts(settings).add_user(args.username, read_password(args.password_stdin),
                                       args.role, actor=CLI_ACTOR)
    print(f"added {user.role} {user.username}")
    return 0


def list_users(args: argparse.Namespace, settings: Settings) -> int:
    users = accounts(settings).users()
    for user in users:
        created = datetime.fromtimestamp(user.created).strftime("%Y-%m-%d %H:%M")
        print(f"{user.username:24} {user.role:7} created {created}")
    if not users:
        print("no users: create the first admin with `appliance users add NAME --role admin`")
    return 0


def remove_user(args: argparse.Namespace, settings: Settings) -> int:
    accounts(settings).remove_user(args.username, actor=CLI_ACTOR)
    print(f"removed {args.username}")
    return 0


def set_password(args: argparse.Namespace, settings: Settings) -> int:
    accounts(settings).set_password(args.username, read_password(args.password_stdin),
                                    actor=CLI_ACTOR)
    print(f"password changed for {args.username}; their sessions were ended")
    return 0
