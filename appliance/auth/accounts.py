"""Users, API tokens, browser sessions and the audit log, in the call log's SQLite database.

Passwords are hashed with argon2id (argon2-cffi's defaults, about 50 ms per check here: slow
enough to make guessing expensive, fast enough for a login). API tokens and session ids are
256-bit random values, so one SHA-256 is enough to store them: there is nothing to brute-force,
and a lookup by hash stays a plain indexed query. Every method is blocking: the web layer runs
them on its database thread, the CLI calls them directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlite_utils.db import Table

from appliance.store.schema import migrate

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
TOKEN_PREFIX = "apl_"
MIN_PASSWORD = 10
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A refused account operation; the message says why and is safe to show."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    created: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    prefix: str
    role: Role
    created: float
    created_by: str
    revoked: float | None
    last_used: float | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request, and how they proved it."""

    name: str
    role: Role
    via: Literal["session", "token"]
    csrf: str = ""  # the session's CSRF token; empty for API tokens (no ambient credential)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def open_accounts_db(path: Path) -> sqlite_utils.Database:
    """A connection to the call log, migrated; usable from any one thread at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    migrate(db)
    return db


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")


class Accounts:
    """Account operations over one database connection."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def table(self, name: str) -> Table:
        return self.db.table(name)

    # --- users ------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str, *, actor: str) -> User:
        if not USERNAME.match(username):
            raise AccountError("username: 1-64 letters, digits or . _ @ -")
        check_password(password)
        user = User(username, check_role(role), time.time())
        try:
            with self.db.conn:
                self.table("users").insert({"username": username, "role": user.role,
                                         "password_hash": _hasher.hash(password),
                                         "created": user.created})
        except sqlite3.IntegrityError as err:
            raise AccountError(f"user {username!r} already exists") from err
        self.audit(actor, "user.add", username, role=user.role)
        return user

    def users(self) -> list[User]:
        return [User(r["username"], r["role"], r["created"])
                for r in self.table("users").rows_where(order_by="username")]

    def has_admin(self) -> bool:
        return bool(self.table("users").count_where("role = 'admin'"))

    def remove_user(self, username: str, *, actor: str) -> None:
        self._require_user(username)
        with self.db.conn:
            self.db.execute("DELETE FROM web_sessions WHERE username = ?", [username])
            self.db.execute("DELETE FROM users WHERE username = ?", [username])
        self.audit(actor, "user.remove", username)

    def set_password(self, username: str, password: str, *, actor: str) -> None:
        self._require_user(username)
        check_password(password)
        with self.db.conn:
            self.table("users").update(username, {"password_hash": _hasher.hash(password)})
            # A new password ends every session opened with the old one.
            self.db.execute("DELETE FROM web_sessions WHERE username = ?", [username])
        self.audit(actor, "user.passwd", username)

    def verify_password(self, username: str, password: str) -> User | None:
        rows = list(self.table("users").rows_where("username = ?", [username]))
        if not rows:
            _hasher.hash(password)  # same cost as a real check: no timing oracle for names
            return None
        row = rows[0]
        try:
            _hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(row["password_hash"]):
            with self.db.conn:
                self.table("users").update(username, {"password_hash": _hasher.hash(password)})
        return User(row["username"], row["role"], row["created"])

    def _require_user(self, username: str) -> None:
        if not self.table("users").count_where("username = ?", [username]):
            raise AccountError(f"no user {username!r}")

    # --- API tokens -------------------------------------------------------------------------

    def create_token(self, name: str, role: str, *, actor: str) -> tuple[ApiToken, str]:
        """A new token; the secret is returned once and only its hash is kept."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"name": name, "prefix": secret[:10], "token_sha256": sha256(secret),
               "role": check_role(role), "created": time.time(), "created_by": actor}
        with self.db.conn:
            token_id = int(self.table("api_tokens").insert(row).last_pk or 0)
        self.audit(actor, "token.create", f"{token_id}:{name}", role=role)
        return self._token(self.table("api_tokens").get(token_id)), secret

    def tokens(self) -> list[ApiToken]:
        return [self._token(r) for r in self.table("api_tokens").rows_where(order_by="id")]

    def revoke_token(self, token_id: int, *, actor: str) -> None:
        with self.db.conn:
            cursor = self.db.execute(
                "UPDATE api_tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                [time.time(), token_id])
        if not cursor.rowcount:
            raise AccountError(f"no active token with id {token_id}")
        self.audit(actor, "token.revoke", str(token_id))

    def token_principal(self, secret: str) -> Principal | None:
        if not secret.startswith(TOKEN_PREFIX):
            return None
        rows = list(self.table("api_tokens").rows_where(
            "token_sha256 = ? AND revoked IS NULL", [sha256(secret)]))
        if not rows:
            return None
        with self.db.conn:
            self.table("api_tokens").update(rows[0]["id"], {"last_used": time.time()})
        return Principal(f"token:{rows[0]['name']}", rows[0]["role"], "token")

    @staticmethod
    def _token(row: dict[str, Any]) -> ApiToken:
        return ApiToken(row["id"], row["name"], row["prefix"], row["role"], row["created"],
                        row["created_by"], row["revoked"], row["last_used"])

    # --- browser sessions -------------------------------------------------------------------

    def open_session(self, username: str, lifetime_s: float) -> str:
        """A new session; returns the cookie value (stored only as its hash)."""
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.conn:
            self.db.execute("DELETE FROM web_sessions WHERE expires < ?", [now])
            self.table("web_sessions").insert({"id_sha256": sha256(secret), "username": username,
                                            "csrf": secrets.token_urlsafe(32), "created": now,
                                            "expires": now + lifetime_s})
        return secret

    def session_principal(self, secret: str) -> Principal | None:
        """The session's user, read fresh each time: a removed user or a new role counts now."""
        row = self.db.execute(
            "SELECT s.username, u.role, s.csrf FROM web_sessions s JOIN users u USING (username) "
            "WHERE s.id_sha256 = ? AND s.expires > ?", [sha256(secret), time.time()]).fetchone()
        return Principal(row[0], row[1], "session", row[2]) if row else None

    def close_session(self, secret: str) -> None:
        with self.db.conn:
            self.db.execute("DELETE FROM web_sessions WHERE id_sha256 = ?", [sha256(secret)])

    # --- audit log --------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        with self.db.conn:
            self.table("audit_log").insert({"at": time.time(), "actor": actor, "action": action,
                                         "target": target,
                                         "detail": json.dumps(detail, default=str)})

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        return [dict(r, detail=json.loads(r["detail"] or "{}"))
                for r in self.table("audit_log").rows_where(order_by="id desc", limit=limit)]
