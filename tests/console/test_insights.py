"""Insights: per-day numbers and grouped unanswered questions, as units, on both call-log back
ends, and through a real server: a declined question on a call, grouped, answered from the
page, and then answered by the agent."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from appliance.config import Settings
from appliance.console import insights
from appliance.console.kbadmin import answer_entry
from appliance.console.queries import DECLINED_PREFIX
from appliance.engines.fakes import FakeStt
from appliance.kb import KbError
from appliance.kb.embedding import embedder_from_settings
from appliance.store.metrics import TurnMetrics
from appliance.store.postgres import call_store
from appliance.store.reader import call_log_reader
from tests.console.helpers import ADMIN, VIEWER, console_server, login
from tests.console.test_console_api import make_token, place_answered_call, wait_ended
from tests.web.fake_engines import FakeSet

DECLINE = f"{DECLINED_PREFIX}. I can take a message if you like."
TODAY = date(2026, 3, 10)


def at(day: date, hour: int) -> float:
    return datetime(day.year, day.month, day.day, hour).timestamp()


# --- units ------------------------------------------------------------------------------------

def test_cluster_merges_by_average_similarity_above_the_threshold() -> None:
    v = np.array([[1, 0, 0], [0.9, 0.436, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert insights.cluster(v, 0.8) == [[0, 1], [2], [3]]
    # 0 and 1 merge first (0.9); then {0,1}~2 averages (0 + 0.436) / 2 = 0.22: apart at 0.3,
    # together at 0.2 (single linkage would have merged on 1~2's 0.436 alone).
    assert insights.cluster(v, 0.3) == [[0, 1], [2], [3]]
    assert insights.cluster(v, 0.2) == [[0, 1, 2], [3]]
    assert insights.cluster(v[:0], 0.5) == []


def test_per_day_numbers() -> None:
    yesterday = TODAY - timedelta(days=1)
    calls: list[dict[str, Any]] = [
        {"started": at(TODAY, 9), "ended": at(TODAY, 9) + 60, "transferred": 1, "answers": 2,
         "declines": 1},
        {"started": at(TODAY, 10), "ended": at(TODAY, 10) + 120, "transferred": 0,
         "answers": 2, "declines": 0},
        {"started": at(TODAY, 11), "ended": at(TODAY, 11) + 300, "transferred": 0,
         "answers": 0, "declines": 0},
        {"started": at(TODAY, 12), "ended": None, "transferred": 0, "answers": 0,
         "declines": 0},  # in progress: counted, no duration
    ]
    v2v = [{"started": at(TODAY, 9), "v2v_s": s} for s in (0.5, 0.7, 0.9, 2.1)]
    days = insights.per_day(calls, v2v, yesterday, TODAY)
    assert days[0] == {"day": yesterday.isoformat(), "calls": 0, "duration_mean_s": None,
                       "duration_median_s": None, "v2v_p50_s": None, "v2v_p95_s": None,
                       "v2v_turns": 0, "transfer_rate": None, "questions": 0, "declined": 0,
                       "decline_rate": None}
    today = days[1]
    assert (today["calls"], today["duration_mean_s"], today["duration_median_s"]) == (4, 160.0,
                                                                                      120.0)
    assert (today["v2v_p50_s"], today["v2v_p95_s"], today["v2v_turns"]) == (0.8, 1.92, 4)
    assert (today["transfer_rate"], today["decline_rate"]) == (0.25, 0.25)


def test_identical_questions_group_without_a_model_and_a_failing_model_falls_back() -> None:
    rows = [{"question": "Do you sell gift cards?", "asked": 1.0},
            {"question": "do you  sell gift cards", "asked": 3.0},
            {"question": "Can I park here?", "asked": 2.0}, {"question": " ", "asked": 4.0}]
    grouped, how = insights.group_questions(rows, None)
    assert how == "exact text"
    assert [(g["count"], g["last_asked"], g["phrasings"]) for g in grouped] == [(2, 3.0, 2),
                                                                                (1, 2.0, 1)]

    def broken(texts: list[str]) -> list[list[float]]:
        raise KbError("cannot load embedding model")
    assert insights.group_questions(rows, broken)[1] == "exact text"


def test_answer_entry_is_an_faq_file_under_kb_answers(settings: Settings) -> None:
    path, text = answer_entry(settings, "  # do you sell\ngift cards ", " Yes, at the desk. ")
    assert path == Path(settings.kb_dir) / "answers" / "do-you-sell-gift-cards.md"
    assert text == "# do you sell gift cards?\n\nYes, at the desk.\n"
    for question, answer in (("", "x"), ("q?", " "), ("q" * 301, "x")):
        with pytest.raises(KbError):
            answer_entry(settings, question, answer)


# --- both back ends, through the store and the reader -----------------------------------------

def seed(settings: Settings) -> None:
    """Two days of calls: declines in three phrasings of one topic and one of another."""
    async def write() -> None:
        store = call_store(settings)
        await store.open()
        asked = [("CA1", TODAY, "Do you sell gift cards?"),
                 ("CA2", TODAY, "can I buy a gift card from you"),
                 ("CA3", TODAY - timedelta(days=1), "Do you sell gift cards"),
                 ("CA4", TODAY, "is there wheelchair access")]
        for sid, day, question in asked:
            await store.call_started(sid, mode="media-streams", from_number="+1")
            await store.add_turn(sid, idx=0, role="assistant", text="Thanks for calling",
                                 started=at(day, 9))
            await store.add_turn(sid, idx=1, role="user", text=question, started=at(day, 9) + 5)
            await store.add_assistant_turn(sid, idx=1, text=DECLINE, heard_text=DECLINE,
                                           started=at(day, 9) + 6, interrupted=False,
                                           kb_chunks=[], metrics=TurnMetrics(v2v_s=0.8))
            await store.add_turn(sid, idx=2, role="user", text="when do you open",
                                 started=at(day, 9) + 10)
            await store.add_assistant_turn(sid, idx=2, text="We open at nine.",
                                           heard_text="We open at nine.", started=at(day, 9) + 11,
                                           interrupted=False, kb_chunks=[],
                                           metrics=TurnMetrics(v2v_s=1.2))
            await store.call_ended(sid, status="completed", reason="stop received")
        await store.add_event("CA4", "tool", name="transfer")
        await store.close()
        log = call_log_reader(settings)
        await log.open()
        for sid, day, _ in asked:  # the calls happened on their days
            await log.transaction([("UPDATE calls SET started = ?, ended = ? WHERE call_sid = ?",
                                    [at(day, 9), at(day, 9) + 90, sid])])
        await log.close()
    asyncio.run(write())


def test_insights_on_both_back_ends(log_settings: Settings) -> None:
    seed(log_settings)
    embed = embedder_from_settings(log_settings)

    async def read() -> dict:
        log = call_log_reader(log_settings)
        await log.open()
        try:
            return await insights.insights(log, embed, days=7, today=TODAY)
        finally:
            await log.close()

    data = asyncio.run(read())
    assert data["grouping"] == "meaning" and len(data["days"]) == 7
    today, yesterday = data["days"][-1], data["days"][-2]
    assert (today["calls"], today["duration_mean_s"], today["duration_median_s"]) == (3, 90.0,
                                                                                      90.0)
    assert (today["questions"], today["declined"], today["decline_rate"]) == (6, 3, 0.5)
    assert today["transfer_rate"] == round(1 / 3, 3)
    assert (today["v2v_p50_s"], today["v2v_turns"]) == (1.0, 6)
    assert (yesterday["calls"], yesterday["decline_rate"]) == (1, 0.5)
    gift, wheelchair = data["unanswered"]
    assert gift["count"] == 3 and gift["phrasings"] == 3
    assert gift["last_asked"] == at(TODAY, 9) + 5
    assert set(gift["examples"]) == {"Do you sell gift cards?", "can I buy a gift card from you",
                                     "Do you sell gift cards"}
    assert (wheelchair["question"], wheelchair["count"]) == ("is there wheelchair access", 1)
    assert all(not q["question"].startswith("when do you open") for q in data["unanswered"])


# --- the real path ----------------------------------------------------------------------------

HOURS = b"# Opening hours\n\nWe are open Monday to Friday, 9 am to 5 pm.\n"


def test_a_declined_call_grouped_answered_from_insights_then_answered(
        log_settings: Settings, tmp_path: Path) -> None:
    settings = msgspec.structs.replace(log_settings, kb_dir=str(tmp_path / "kb"))
    fakes = FakeSet(stt=FakeStt(["Do you sell gift cards?"]))
    with console_server(settings, fakes) as base:
        admin_api = httpx.Client(base_url=base, timeout=120, headers={
            "Authorization": f"Bearer {make_token(settings, 'admin')}"})
        assert admin_api.post("/api/v1/kb/documents",
                              files={"file": ("hours.md", HOURS)}).status_code == 201
        call_sid = place_answered_call(base, settings)
        turns = wait_ended(admin_api, call_sid)["turns"]
        assert turns[-1]["text"].startswith(DECLINED_PREFIX), turns
        declined = admin_api.get("/api/v1/calls", params={"flag": "declined"}).json()
        assert [c["call_sid"] for c in declined["calls"]] == [call_sid]

        viewer, viewer_csrf = login(base, VIEWER)
        data = viewer.get("/api/v1/insights").json()
        assert [(g["question"], g["count"], g["answered_at"]) for g in data["unanswered"]] == [
            ("Do you sell gift cards?", 1, None)]
        assert data["days"][-1]["declined"] == 1
        page = viewer.get("/console/insights")
        assert page.status_code == 200 and "Do you sell gift cards?" in page.text
        assert 'href="/console/insights"' in page.text and "answer-form" not in page.text
        refused = viewer.post("/console/insights/answer", data={
            "_csrf": viewer_csrf, "question": "Do you sell gift cards?", "answer": "No."})
        assert refused.status_code == 403
        assert viewer.post("/api/v1/insights/answers", json={"question": "q", "answer": "a"},
                           headers={"X-CSRF-Token": viewer_csrf}).status_code == 403

        admin, csrf = login(base, ADMIN)
        html = admin.get("/console/insights?days=7").text
        assert "answer-form" in html
        form = dict(re.findall(r'name="(_csrf|question|days)" value="([^"]*)"', html))
        assert form["question"] == "Do you sell gift cards?"
        without_csrf = admin.post("/console/insights/answer",
                                  data={**form, "_csrf": "", "answer": "Yes."})
        assert without_csrf.status_code == 403
        added = admin.post("/console/insights/answer", data={
            **form, "answer": "Yes, we sell gift cards at the front desk, from 20 dollars."})
        assert added.status_code == 303
        assert added.headers["location"].startswith("/console/insights?days=7&msg=added")
        entry = Path(settings.kb_dir) / "answers" / "do-you-sell-gift-cards.md"
        assert entry.read_text().startswith("# Do you sell gift cards?\n")
        group = admin.get("/api/v1/insights").json()["unanswered"][0]
        assert group["answered_at"] == entry.stat().st_mtime
        assert "An answer was added" in admin.get("/console/insights").text

        # "Try a question" (what `appliance ask` runs) now answers from the new entry.
        asked = admin.post("/api/v1/kb/ask", json={"question": "Do you sell gift cards?"},
                           headers={"X-CSRF-Token": csrf}).json()
        assert "gift cards at the front desk" in asked["answer"], asked
        assert asked["sources"][0]["source"] == "do-you-sell-gift-cards.md"
        audit = admin_api.get("/api/v1/audit").json()
        assert (audit[0]["action"], audit[0]["actor"]) == ("kb.answer", ADMIN)


def test_cached_embed_embeds_each_question_once() -> None:
    seen: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]

    cached = insights.CachedEmbed(embed, limit=3)
    assert cached(["a", "bb", "a"]) == [[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]
    assert cached(["bb", "ccc"]) == [[2.0, 1.0], [3.0, 1.0]]
    assert seen == [["a", "bb"], ["ccc"]]
    cached(["dddd"])  # over the limit: starts afresh
    cached(["a"])
    assert seen[-2:] == [["dddd"], ["a"]]
