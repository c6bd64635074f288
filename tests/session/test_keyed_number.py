"""A call-back number keyed on the phone pad, through both sessions on a clock the test moves:
the keys stop the question being spoken, '0' is a digit (no transfer), the pause ends the entry,
and the number is read back, confirmed and stored with the message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.core.agent import Agent
from appliance.core.events import StageEventType as E
from appliance.core.relay_session import RelaySession
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts
from appliance.messages.keypad import KEY_PAUSE_S
from tests.conftest import make_settings
from tests.session.harness import FakeClock, MemoryStore, start_call, until
from tests.session.test_relay_session import FakeRelayTransport

pytestmark = pytest.mark.anyio

TRANSFER_TO = "+15550009999"
SPOKEN = ["can I leave a message", "It's Ana Silva", "yes", "call me about Rex", "yes"]


async def test_media_streams_keyed_number_with_a_zero_and_a_pause(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, transfer_number=TRANSFER_TO)
    tts = FakeTts(ms=3000, chunk_ms=100)  # long phrases: the keys come while one plays
    call = await start_call(settings, stt=FakeStt(SPOKEN), tts=tts)
    spoken = lambda: len(call.store.turns)  # noqa: E731

    async def ask_and_hear(expected: str) -> None:
        before, ends = spoken(), call.types().count(E.TURN_END)
        await call.ask()
        await call.until(lambda: call.types().count(E.TURN_END) > ends, expected)
        assert expected in " ".join(tts.texts[-2:])
        call.ack()
        await call.until(lambda: spoken() >= before + 2, f"{expected} recorded")

    try:
        await call.greeted()
        await ask_and_hear("your name")
        await call.ask()
        await call.until(lambda: "key it in" in (tts.texts or [""])[-1], "the number question")
        await call.until(lambda: call.session.playout.playing, "the question playing")
        for key in "5550201334":
            call.session.on_dtmf(key)
        marks = len(call.transport.marks())
        await call.until(lambda: call.clock.sleeping, "the wait for more keys")
        # the question stopped at the first key (the clear goes out on a task of its own)
        await call.until(lambda: ("clear", None) in call.transport.sent, "clear at the first key")
        assert not [s for s in call.transport.sent if s[0] == "transfer"]  # '0' was a digit
        call.clock.advance(KEY_PAUSE_S - 0.5)
        await asyncio.sleep(0.01)
        assert "I have" not in tts.texts[-1]
        call.clock.advance(0.5)
        await call.until(lambda: "Is that right?" in tts.texts[-1], "the read-back")
        assert tts.texts[-2] == "I have 555-020-1334."
        await call.until(lambda: len(call.transport.marks()) == marks + 2, "read-back sent")
        call.ack()
        await ask_and_hear("your message")
        await ask_and_hear("call back on 555-020-1334")
        await ask_and_hear("passed your message on")
        await call.until(lambda: call.store.left, "the message stored")
    finally:
        await call.end()
    assert call.store.left[0]["callback_number"] == "5550201334"
    texts = [(t["role"], t["text"]) for t in call.store.turns]
    assert ("user", "keyed 5550201334") in texts
    assert ("assistant", "I have 555-020-1334. Is that right?") in texts
    assert [e["digit"] for e in call.store.events if e["type"] == "dtmf" and "digit" in e] == \
        list("5550201334")


async def test_relay_keyed_number_ends_at_pound(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay", transfer_number=TRANSFER_TO)
    workers = Workers.sized(1, 1)
    transport, store, clock = FakeRelayTransport(), MemoryStore(), FakeClock()
    session = RelaySession("CAkeys", settings, Agent(settings, FakeLlm(), None, workers), store,
                           transport, clock=clock)
    replies = lambda: [t[1] for t in transport.sent if t[0] == "text" and t[1]]  # noqa: E731

    async def prompt(text: str, expected: str) -> None:
        session.on_prompt(text, last=True)
        await until(lambda: replies() and expected in replies()[-1], expected)

    await session.start()
    try:
        await prompt("I'd like to leave a message", "your name")
        await prompt("Ana Silva", "key it in")
        for key in "*0":
            session.on_dtmf(key)  # a restart first, then the zero is a digit
        await until(lambda: "start over" in replies()[-1], "the restart prompt")
        for key in "205550134#":
            session.on_dtmf(key)
        await until(lambda: "I have" in replies()[-1], "the read-back")
        assert replies()[-1] == "I have 020-555-0134. Is that right?"
        await prompt("yes", "your message")
        await prompt("call me", "call back on 020-555-0134")
        await prompt("yes", "passed your message on")
        await until(lambda: store.left, "the message stored")
    finally:
        await session.close("test over")
        workers.shutdown()
    assert not [s for s in transport.sent if s[0] == "end"]  # no transfer
    assert store.left[0]["callback_number"] == "0205550134"
    assert ("user", "keyed 0205550134#") in [(t["role"], t["text"]) for t in store.turns]


async def test_relay_keyed_number_ends_at_a_pause_on_the_session_clock(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay")
    workers = Workers.sized(1, 1)
    transport, store, clock = FakeRelayTransport(), MemoryStore(), FakeClock()
    session = RelaySession("CApause", settings, Agent(settings, FakeLlm(), None, workers), store,
                           transport, clock=clock)
    replies = lambda: [t[1] for t in transport.sent if t[0] == "text" and t[1]]  # noqa: E731
    await session.start()
    try:
        session.on_prompt("take a message", last=True)
        await until(lambda: len(replies()) == 1, "the name question")
        session.on_prompt("Jo", last=True)
        await until(lambda: len(replies()) == 2, "the number question")
        for key in "5552013344":
            session.on_dtmf(key)
        await until(lambda: clock.sleeping, "the wait for more keys")
        clock.advance(KEY_PAUSE_S - 0.1)
        await asyncio.sleep(0.01)
        assert len(replies()) == 2  # still waiting for keys
        clock.advance(0.1)
        await until(lambda: len(replies()) == 3, "the read-back")
    finally:
        await session.close("test over")
        workers.shutdown()
    assert replies()[-1] == "I have 555-201-3344. Is that right?"
    assert ("user", "keyed 5552013344") in [(t["role"], t["text"]) for t in store.turns]
