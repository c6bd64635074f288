"""The call log's suite, run against every back end: SQLite (default) and PostgreSQL."""

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from appliance.store.calls import SqliteCallStore as CallStore
from appliance.store.metrics import METRIC_FIELDS, PROMPT_FIELDS, SentenceVoice, TurnMetrics
from appliance.store.postgres import MIGRATIONS as PG_MIGRATIONS
from appliance.store.postgres import PostgresCallStore
from appliance.store.schema import MIGRATIONS

Store = CallStore | PostgresCallStore


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    """A factory of stores on one database: each call is a box (re)starting."""
    if request.param == "sqlite":
        return lambda box="a": CallStore(tmp_path / "calls.db")
    url = request.getfixturevalue("postgres_url")
    return lambda box="a": PostgresCallStore(url, box)


async def _exercise(store: Store) -> dict:
    await store.open()
    await store.call_started("CA1", mode="media-streams", from_number="+1", to_number="+2")
    await store.update_call("CA1", stream_sid="MZ1", status="in-progress")
    user = await store.add_turn("CA1", idx=1, role="user", text="hi", started=1.0)
    bot = await store.add_turn("CA1", idx=1, role="assistant", text="Hello there friend",
                               heard_text="Hello", interrupted=True, started=2.0,
                               kb_chunks=["hours.md#0"])
    assert user and bot
    await store.add_metrics(bot, "CA1", TurnMetrics(stt_s=0.2, v2v_s=0.9))
    await store.add_metrics(bot, "CA1", TurnMetrics(  # replaces
        stt_s=0.2, v2v_s=0.8, retrieval_s=0.05, tts_sentences=[SentenceVoice("piper", 0.1)],
        prompt_tokens=106, prompt_reused=32, prompt_evaluated=74, prompt_eval_s=0.3,
        prompt_threads=2))
    await store.add_assistant_turn("CA1", idx=2, text="Bye", heard_text="Bye", started=3.0,
                                   interrupted=False, kb_chunks=[],
                                   metrics=TurnMetrics(v2v_s=0.5))
    await store.add_event("CA1", "dtmf", digit="5")
    await store.call_ended("CA1", status="completed", reason="stop received")
    record = await store.call_record("CA1")
    assert await store.call_record("CAnone") is None
    await store.close()
    assert record is not None
    return record


def test_call_log_round_trip(new_store: Callable[..., Store]) -> None:
    record = asyncio.run(_exercise(new_store()))
    assert record["call"]["status"] == "completed" and record["call"]["ended"]
    assert record["call"]["stream_sid"] == "MZ1" and record["call"]["from_number"] == "+1"
    assert [t["role"] for t in record["turns"]] == ["user", "assistant", "assistant"]
    assistant = record["turns"][1]
    assert assistant["interrupted"] is True and assistant["heard_text"] == "Hello"
    assert assistant["metrics"]["v2v_s"] == 0.8 and assistant["kb_chunks"] == ["hours.md#0"]
    assert record["turns"][2]["metrics"]["v2v_s"] == 0.5
    assert assistant["metrics"]["retrieval_s"] == 0.05
    assert {k: assistant["metrics"][k] for k in PROMPT_FIELDS} == {
        "prompt_tokens": 106, "prompt_reused": 32, "prompt_evaluated": 74, "prompt_eval_s": 0.3,
        "prompt_threads": 2}
    assert assistant["metrics"]["llm_ttft_s"] is None
    assert json.loads(assistant["metrics"]["tts_sentences"]) == [
        {"provider": "piper", "first_audio_s": 0.1}]
    assert record["events"][0]["detail"] == {"digit": "5"}


def test_messages_round_trip_on_both_back_ends(new_store: Callable[..., Store]) -> None:
    async def run(store: Store) -> list[dict]:
        await store.open()
        await store.call_started("CA2", mode="media-streams", from_number="+15550001")
        first = await store.add_message("CA2", name="Ann", callback_number="",
                                        message="Call me back")
        second = await store.add_message("CA2", name="Bob", callback_number="+15550002",
                                         message="About my bill")
        assert first and second
        await store.message_delivered(int(first["id"]), error="webhook 500")
        await store.message_delivered(int(second["id"]))
        messages = await store.messages()
        await store.close()
        return messages

    newest, oldest = asyncio.run(run(new_store()))
    assert oldest["callback_number"] == "+15550001"  # the caller ID when none was given
    assert (oldest["delivered"], oldest["delivery_error"]) == (0, "webhook 500")
    assert (newest["name"], newest["delivered"]) == ("Bob", 1)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    asyncio.run(_exercise(CallStore(tmp_path / "calls.db")))
    conn = sqlite3.connect(tmp_path / "calls.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_update_of_an_unknown_call_creates_it(new_store: Callable[..., Store]) -> None:
    async def run() -> dict:
        store = new_store()
        await store.open()
        await store.update_call("CAlate", status="in-progress")
        record = await store.call_record("CAlate")
        await store.close()
        assert record is not None
        return record
    assert asyncio.run(run())["call"]["status"] == "in-progress"


def test_open_calls_are_marked_abandoned_on_restart(new_store: Callable[..., Store]) -> None:
    async def run() -> tuple[int, dict]:
        store = new_store()
        await store.open()
        await store.call_started("CA2", mode="media-streams")
        await store.close()
        store = new_store()
        fixed = await store.open()
        record = await store.call_record("CA2")
        await store.close()
        assert record is not None
        return fixed, record

    fixed, record = asyncio.run(run())
    assert fixed == 1 and record["call"]["status"] == "abandoned"


def test_a_restarting_box_leaves_the_other_boxes_calls_alone(postgres_url: str) -> None:
    async def run() -> tuple[int, dict, dict]:
        a, b = PostgresCallStore(postgres_url, "a"), PostgresCallStore(postgres_url, "b")
        await a.open()
        await b.open()
        await a.call_started("CAa", mode="media-streams")
        await b.call_started("CAb", mode="media-streams")
        await a.close()
        a = PostgresCallStore(postgres_url, "a")
        fixed = await a.open()
        mine, theirs = await a.call_record("CAa"), await a.call_record("CAb")
        await a.close()
        await b.close()
        assert mine is not None and theirs is not None
        return fixed, mine, theirs

    fixed, mine, theirs = asyncio.run(run())
    assert fixed == 1 and mine["call"]["status"] == "abandoned"
    assert theirs["call"]["status"] == "ringing" and theirs["call"]["ended"] is None


def test_migrations_are_idempotent(new_store: Callable[..., Store], tmp_path: Path) -> None:
    async def run() -> int:
        for _ in range(2):
            store = new_store()
            await store.open()
            await store.close()
        store = new_store()
        await store.open()
        if isinstance(store, CallStore):
            version = store.db.execute("PRAGMA user_version").fetchone()[0]
        else:
            cursor = await store.conn.execute("SELECT max(version) AS v FROM schema_version")
            row = await cursor.fetchone()
            assert row is not None
            version = row["v"]
        await store.close()
        return version

    assert asyncio.run(run()) == (len(MIGRATIONS) if isinstance(new_store(), CallStore)
                                  else len(PG_MIGRATIONS))


def test_boxes_starting_together_migrate_once(postgres_url: str) -> None:
    async def run() -> None:
        stores = [PostgresCallStore(postgres_url, f"box{i}") for i in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        await asyncio.gather(*(s.close() for s in stores))
    asyncio.run(run())
    with psycopg.connect(postgres_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, len(PG_MIGRATIONS) + 1))


async def _break(store: Store) -> None:
    """Make every write fail, like a full disk or a dropped table."""
    if isinstance(store, CallStore):
        store.db.conn.close()
    else:
        await store.conn.execute("DROP TABLE events, turn_metrics, turns CASCADE")


def test_a_failing_database_is_logged_not_raised(new_store: Callable[..., Store]) -> None:
    async def run() -> None:
        store = new_store()
        await store.open()
        await _break(store)
        assert await store.add_turn("CA3", idx=1, role="user", text="x", started=0) is None
        await store.add_event("CA3", "dtmf", digit="1")
        await store.close()
    asyncio.run(run())


def test_a_dropped_postgres_connection_is_reopened(postgres_url: str) -> None:
    async def run() -> dict:
        store = PostgresCallStore(postgres_url, "a")
        await store.open()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [store.conn.info.backend_pid])
        await store.call_started("CA4", mode="media-streams")
        await store.call_started("CA4b", mode="media-streams")
        record = await store.call_record("CA4b")
        await store.close()
        assert record is not None
        return record
    assert asyncio.run(run())["call"]["status"] == "ringing"


def test_a_v1_database_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from appliance.store.schema import MIGRATIONS as STEPS

    db = sqlite_utils.Database(tmp_path / "calls.db")
    STEPS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.table("calls").insert({"call_sid": "CAold", "started": 1.0, "status": "completed",
                              "ended": 2.0})
    db.conn.commit()
    db.conn.close()

    async def run() -> dict:
        store = CallStore(tmp_path / "calls.db")
        await store.open()
        record = await store.call_record("CAold")
        await store.close()
        assert record is not None
        return record

    assert asyncio.run(run())["call"]["status"] == "completed"  # data kept, schema upgraded
    columns = {c[1] for c in sqlite3.connect(tmp_path / "calls.db").execute(
        "PRAGMA table_info(turn_metrics)")}
    assert set(METRIC_FIELDS) <= columns  # every field of the typed record has its column


def test_a_failing_migration_leaves_the_previous_version_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite_utils

    from appliance.store import schema

    def broken(db: sqlite_utils.Database) -> None:
        db.table("turn_metrics").add_column("half_done", str)
        db.table("extra").create({"id": int}, pk="id")
        raise RuntimeError("disk full")

    conn = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)  # as CallStore opens it
    db = sqlite_utils.Database(conn)
    monkeypatch.setattr(schema, "MIGRATIONS", [MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError, match="disk full"):
        schema.migrate(db)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "extra" not in db.table_names()
    assert "half_done" not in db.table("turn_metrics").columns_dict
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    assert schema.migrate(db) == len(MIGRATIONS)
    assert "tts_sentences" in db.table("turn_metrics").columns_dict


def test_a_v1_postgres_database_is_migrated_in_place(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(PG_MIGRATIONS[0])
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO calls (call_sid, started, status, ended) "
                     "VALUES ('CAold', 1, 'completed', 2)")

    async def run() -> dict:
        store = PostgresCallStore(postgres_url, "a")
        await store.open()
        record = await store.call_record("CAold")
        await store.close()
        assert record is not None
        return record

    assert asyncio.run(run())["call"]["status"] == "completed"
    with psycopg.connect(postgres_url) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name='turn_metrics' "
            "AND table_schema = current_schema()")}
    assert set(METRIC_FIELDS) <= columns  # every field of the typed record has its column
