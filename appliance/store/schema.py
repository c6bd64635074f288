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
    """Knowledge-base retrieval time per turn (measured since the start, stored since v3)."""
    db.table("turn_metrics").add_column("retrieval_s", float)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]


def migrate(db: sqlite_utils.Database) -> int:
    """Bring ``db`` to the latest schema; returns the resulting version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        with db.conn:
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)
