"""``CallRecorder.replied``: what a spoken reply leaves in the call log, the same for both
sessions (an ``ungrounded`` event, a confirmed message handed to delivery)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from appliance.config import Settings
from appliance.core.agent import Reply
from appliance.core.answer_guard import GuardLog
from appliance.core.recorder import CallRecorder
from appliance.core.redaction import Redactor
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


async def test_redaction_reaches_the_call_log_not_the_models_memory(settings: Settings) -> None:
    store = MemoryStore()
    recorder = CallRecorder("CAtest", store, FakeClock(), redact=Redactor("US"))
    said = "My card is 4111 1111 1111 1111, call me on 555-123-4567"
    recorder.user(said, started=0.0)
    recorder.conversation.add("user", said)
    turn = recorder.begin(text="I'll call 555-123-4567 back. Mail ann@example.com too?")
    recorder.event("barge-in", heard="I'll call 555-123-4567")
    recorder.finish(turn, interrupted=True, heard="I'll call 555-123-4567")
    recorder.replied(Reply(_no_tokens(), message=TakenMessage("Ann", "555-123-4567",
                                                              "card 4111 1111 1111 1111")),
                     settings)
    await recorder.close(status="completed", reason="test")
    assert [(t["role"], t["text"], t["heard_text"]) for t in store.turns] == [
        ("user", "My card is [card], call me on [phone]", None),
        ("assistant", "I'll call [phone] back. Mail [email] too?", "I'll call [phone]")]
    assert store.events[0] == {"type": "barge-in", "heard": "I'll call [phone]"}
    # the model still knows the number it was given, and staff get the message as left
    assert [m.content for m in recorder.conversation.history] == [
        said, "I'll call 555-123-4567"]
    assert (store.left[0]["callback_number"], store.left[0]["message"]) == (
        "555-123-4567", "card 4111 1111 1111 1111")
