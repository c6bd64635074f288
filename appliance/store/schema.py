"""Schema migrations for the call log, applied in order and tracked by ``PRAGMA user_version``.

Never drop or rewrite a table here: append a new migration instead.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db.table("calls").create(
        {
            "call_sid": str,
            "stream_sid": str,
            "mode": str,
            "from_number": str,
            "to_number": str,
            "started": float,
            "ended": float,
            "status": str,
            "end_reason": str,
        },
        pk="call_sid",
        not_null={"call_sid", "started", "status"},
    )
    db.table("turns").create(
        {
            "id": int,
            "call_sid": str,
            "idx": int,
            "role": str,
            "text": str,
            "heard_text": str,
            "started": float,
            "ended": float,
            "interrupted": int,
            "kb_chunks": str,
        },
        pk="id",
        foreign_keys=[("call_sid", "calls", "call_sid")],
    )
    db.table("events").create(
        {"id": int, "call_sid": str, "at": float, "type": str, "detail": str},
        pk="id",
        foreign_keys=[("call_sid", "calls", "call_sid")],
    )
    db.table("turn_metrics").create(
        {
            "turn_id": int,
            "call_sid": str,
            "endpoint_s": float,
            "stt_s": float,
            "llm_ttft_s": float,
            "first_sentence_s": float,
            "tts_first_audio_s": float,
            "v2v_s": float,
            "first_token_sent_s": float,
            "tts_provider": str,
        },
        pk="turn_id",
        foreign_keys=[("turn_id", "turns", "id"), ("call_sid", "calls", "call_sid")],
    )
    db.table("turns").create_index(["call_sid"])
    db.table("events").create_index(["call_sid"])
    db.table("calls").create_index(["status"])


def _v2(db: sqlite_utils.Database) -> None:
    """Which voice spoke each sentence of a turn, and how soon: a JSON list of
    ``{"provider", "first_audio_s"}``."""
    db.table("turn_metrics").add_column("tts_sentences", str)


def _v3(db: sqlite_utils.Database) -> None:
    """Messages callers left (take-a-message), linked to their call; ``callback_number`` is the
    caller ID when the caller chose "this number"; ``delivered`` says the webhook took it."""
    db.table("messages").create(
        {"id": int, "call_sid": str, "at": float, "name": str, "callback_number": str,
         "message": str, "delivered": int, "delivery_error": str},
        pk="id",
        foreign_keys=[("call_sid", "calls", "call_sid")],
    )
    db.table("messages").create_index(["call_sid"])


def _v4(db: sqlite_utils.Database) -> None:
    """Operator console: accounts, API tokens, browser sessions and the audit log
    (see appliance/auth). Secrets are stored only as hashes."""
    db.table("users").create({"username": str, "role": str, "password_hash": str, "created": float},
                       pk="username", not_null={"role", "password_hash", "created"})
    db.table("api_tokens").create({"id": int, "name": str, "prefix": str, "token_sha256": str,
                             "role": str, "created": float, "created_by": str,
                             "revoked": float, "last_used": float},
                            pk="id", not_null={"token_sha256", "role", "created"})
    db.table("api_tokens").create_index(["token_sha256"], unique=True)
    db.table("web_sessions").create({"id_sha256": str, "username": str, "csrf": str,
                                     "created": float, "expires": float},
                                    pk="id_sha256",
                                    foreign_keys=[("username", "users", "username")])
    db.table("audit_log").create({"id": int, "at": float, "actor": str, "action": str,
                                  "target": str, "detail": str},
                                 pk="id", not_null={"at", "actor", "action"})
    db.table("calls").create_index(["started"])


def _v5(db: sqlite_utils.Database) -> None:
    """Knowledge-base retrieval time per turn (measured since the start, stored since v5)."""
    db.table("turn_metrics").add_column("retrieval_s", float)


def _v6(db: sqlite_utils.Database) -> None:
    """Call recordings: the file under the data dir (set when recording starts, so a crash
    still leaves it findable) and its length once the call ended."""
    db.table("calls").add_column("recording", str)
    db.table("calls").add_column("recording_s", float)


def _v7(db: sqlite_utils.Database) -> None:
    """Whether a turn's answer was worked out before its end was confirmed (1) or after (0)."""
    db.table("turn_metrics").add_column("speculative", int)


def _v8(db: sqlite_utils.Database) -> None:
    """How a generated answer's prompt was read (store/metrics.py PROMPT_FIELDS)."""
    table = db.table("turn_metrics")
    for name in ("prompt_tokens", "prompt_reused", "prompt_evaluated", "prompt_threads"):
        table.add_column(name, int)
    table.add_column("prompt_eval_s", float)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7,
                                                              _v8]


def migrate(db: sqlite_utils.Database) -> int:
    """Bring ``db`` to the latest schema; returns the resulting version.

    Each migration is one transaction, version bump included: a crash or error half-way leaves
    the previous version intact, never half a schema. The connection is in autocommit mode
    (``isolation_level=None``), where ``with conn:`` opens no transaction, hence the explicit
    BEGIN; SQLite's DDL is transactional.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return len(MIGRATIONS)
