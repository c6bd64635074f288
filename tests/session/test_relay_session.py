"""``RelaySession`` driven directly: fake transport, in-memory call log, a clock moved by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.config import Settings
from appliance.core.agent import Agent, Tool
from appliance.core.events import StageEvent
from appliance.core.events import StageEventType as E
from appliance.core.relay_session import RelaySession
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm
from tests.session.harness import FakeClock, MemoryStore, until

pytestmark = pytest.mark.anyio


class FakeRelayTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send_text(self, token: str, last: bool) -> None:
        self.sent.append(("text", token, last))

    async def end(self, tool: Tool, call_sid: str) -> None:
        self.sent.append(("end", tool, call_sid))


async def test_the_session_ends_only_once_twilio_could_say_goodbye(settings: Settings) -> None:
    workers = Workers.sized(1, 1)
    transport, store, clock = FakeRelayTransport(), MemoryStore(), FakeClock()
    events: list[StageEvent] = []
    session = RelaySession("CAtest", settings, Agent(settings, FakeLlm(), None, workers), store,
                           transport, clock=clock, events=events.append)
    await session.start()
    try:
        session.on_prompt("Thanks, goodbye!", last=True)
        await until(lambda: clock.sleeping, "the wait for Twilio to speak")
        assert transport.sent == [("text", settings.goodbye, False), ("text", "", True)]
        words = len(settings.goodbye.split())
        clock.advance(words / 2.5 - 0.1)  # Twilio is still speaking it
        await asyncio.sleep(0.01)
        assert transport.sent[-1][0] == "text" and clock.sleeping
        clock.advance(0.1)
        await until(lambda: transport.sent[-1][0] == "end", "the end message")
        assert transport.sent[-1] == ("end", Tool.END_CALL, "CAtest")
    finally:
        await session.close("test over")
        workers.shutdown()
    assert [e.type for e in events].count(E.TURN_END) == 1
    assert [(t["role"], t["text"]) for t in store.turns] == [
        ("assistant", settings.greeting_text), ("user", "Thanks, goodbye!"),
        ("assistant", settings.goodbye)]
    assert store.ended == {"status": "completed", "reason": "handed off: end_call"}


async def test_a_model_s_tool_call_takes_the_same_one_tool_path(settings: Settings) -> None:
    workers = Workers.sized(1, 1)
    transport, store, clock = FakeRelayTransport(), MemoryStore(), FakeClock()
    llm = FakeLlm(calls={"I'm all set, cheers": "end_call"})
    session = RelaySession("CAtool", settings, Agent(settings, llm, None, workers), store,
                           transport, clock=clock)
    await session.start()
    try:
        session.on_prompt("I'm all set, cheers", last=True)
        await until(lambda: clock.sleeping, "the wait for Twilio to speak")
        session.on_prompt("Goodbye!", last=True)  # while ending: recorded, not answered
        clock.advance(60)
        await until(lambda: transport.sent[-1][0] == "end", "the end message")
    finally:
        await session.close("test over")
        workers.shutdown()
    assert transport.sent == [("text", settings.goodbye, False), ("text", "", True),
                              ("end", Tool.END_CALL, "CAtool")]
    assert len(llm.tool_requests) == 1 and {"type": "tool", "tool": "end_call"} in store.events
