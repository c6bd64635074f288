import asyncio
import json
import sqlite3
from pathlib import Path

from appliance.store.calls import SqliteCallStore as CallStore
from appliance.store.metrics import METRIC_FIELDS, SentenceVoice, TurnMetrics
from appliance.store.schema import MIGRATIONS


async def _exercise(path: Path) -> dict:
    store = CallStore(path)
    await store.open()
    await store.call_started("CA1", mode="media-streams", from_number="+1", to_number="+2")
    await store.update_call("CA1", stream_sid="MZ1", status="in-progress")
    user = await store.add_turn("CA1", idx=1, role="user", text="hi", started=1.0)
    bot = await store.add_turn("CA1", idx=1, role="assistant", text="Hello there friend",
                               heard_text="Hello", interrupted=True, started=2.0,
                               kb_chunks=["hours.md#0"])
    assert user and bot
    await store.add_metrics(bot, "CA1", TurnMetrics(stt_s=0.2, v2v_s=0.9, retrieval_s=0.05,
                                                    tts_sentences=[SentenceVoice("piper", 0.1)]))
    await store.add_event("CA1", "dtmf", digit="5")
    await store.call_ended("CA1", status="completed", reason="stop received")
    record = await store.call_record("CA1")
    await store.close()
    assert record is not None
    return record


def test_call_log_round_trip(tmp_path: Path) -> None:
    record = asyncio.run(_exercise(tmp_path / "calls.db"))
    assert record["call"]["status"] == "completed" and record["call"]["ended"]
    assert [t["role"] for t in record["turns"]] == ["user", "assistant"]
    assistant = record["turns"][1]
    assert assistant["interrupted"] is True and assistant["heard_text"] == "Hello"
    assert assistant["metrics"]["v2v_s"] == 0.9 and assistant["kb_chunks"] == ["hours.md#0"]
    assert assistant["metrics"]["retrieval_s"] == 0.05
    assert assistant["metrics"]["llm_ttft_s"] is None
    assert json.loads(assistant["metrics"]["tts_sentences"]) == [
        {"provider": "piper", "first_audio_s": 0.1}]
    assert record["events"][0]["detail"] == {"digit": "5"}
    conn = sqlite3.connect(tmp_path / "calls.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_calls_are_marked_abandoned_on_restart(tmp_path: Path) -> None:
    async def run() -> tuple[int, dict]:
        store = CallStore(tmp_path / "calls.db")
        await store.open()
        await store.call_started("CA2", mode="media-streams")
        await store.close()
        store = CallStore(tmp_path / "calls.db")
        fixed = await store.open()
        record = await store.call_record("CA2")
        await store.close()
        assert record is not None
        return fixed, record

    fixed, record = asyncio.run(run())
    assert fixed == 1 and record["call"]["status"] == "abandoned"


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    async def run() -> None:
        for _ in range(2):
            store = CallStore(tmp_path / "calls.db")
            await store.open()
            await store.close()
    asyncio.run(run())
    conn = sqlite3.connect(tmp_path / "calls.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_failing_disk_is_logged_not_raised(tmp_path: Path) -> None:
    async def run() -> None:
        store = CallStore(tmp_path / "calls.db")
        await store.open()
        store.db.conn.close()  # every write now fails like a full or vanished disk
        assert await store.add_turn("CA3", idx=1, role="user", text="x", started=0) is None
        await store.add_event("CA3", "dtmf", digit="1")
    asyncio.run(run())


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
