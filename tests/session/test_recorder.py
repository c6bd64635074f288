"""``CallRecorder.replied``: what a spoken reply leaves in the call log, the same for both
sessions (an ``ungrounded`` event, a confirmed message handed to delivery)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from appliance.config import Settings
from appliance.core.agent import Reply
from appliance.core.answer_guard import GuardLog
from appliance.core.recorder import CallRecorder
from appliance.messages.flow import TakenMessage
from tests.session.harness import FakeClock, MemoryStore

pytestmark = pytest.mark.anyio


async def _no_tokens() -> AsyncIterator[str]:
    return
    yield


async def test_a_replaced_answer_and_a_taken_message_are_recorded(settings: Settings) -> None:
    store = MemoryStore()
    recorder = CallRecorder("CAtest", store, FakeClock())
    recorder.replied(Reply(_no_tokens()), settings)  # grounded, nothing taken: nothing written
    recorder.replied(Reply(_no_tokens(), guard=GuardLog(replaced="price '$54'"),
                           message=TakenMessage("Ann", "", "Call me back")), settings)
    await recorder.close(status="completed", reason="test")
    assert [e for e in store.events if e["type"] == "ungrounded"] == [
        {"type": "ungrounded", "reason": "price '$54'"}]
    assert [(m["call_sid"], m["name"], m["message"]) for m in store.left] == [
        ("CAtest", "Ann", "Call me back")]
    assert store.left[0]["delivered"] == 0  # no webhook configured: stored, not sent
