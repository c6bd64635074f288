"""Answering at the caller's first pause, before the end of the turn is confirmed.

The harness has no turn model: a pause fires after 0.2 s of silence and the turn ends after
0.4 s, so a caller who goes quiet for 0.3 s paused without ending their turn.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.core.agent import Conversation, Tool
from appliance.core.events import StageEventType as E
from appliance.engines.base import ChatMessage, PromptUsage
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts
from tests.conftest import make_settings
from tests.session.harness import SILENCE, Call, start_call, tone
from tests.unit.test_agent import make_agent

pytestmark = pytest.mark.anyio

PAUSE = SILENCE * 15  # 0.3 s: a pause, not the end of the turn
END = SILENCE * 15  # 0.3 s more: the end


class EchoLlm(FakeLlm):
    """Answers with the question it was asked, once the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.finished = 0  # streams that ran to their end (not closed early)

    def stream_chat(self, messages: Sequence[ChatMessage], *, max_tokens: int,
                    temperature: float, session_id: str = "",
                    usage: PromptUsage | None = None) -> Generator[str, None, None]:
        self.requests.append(list(messages))
        question = messages[-1].content

        def stream() -> Generator[str, None, None]:
            self.gate.wait(30)
            yield "You asked:"
            yield f" {question}"
            self.finished += 1
        return stream()


async def settled(call: Call) -> None:
    """Until the answer started at the pause is worked out (or refused)."""
    await call.until(lambda: call.session._early is not None, "the pause")
    early = call.session._early
    assert early is not None
    await call.until(lambda: early._answer.done(), "the early answer")


async def test_the_answer_worked_out_at_the_pause_is_spoken_once_the_turn_ends(
        settings: Settings) -> None:
    llm = FakeLlm(["We open", " at nine."])
    tts = FakeTts(ms=400, chunk_ms=100)
    call = await start_call(settings, llm=llm, tts=tts)
    try:
        await call.greeted()
        sent = len(call.transport.sent)
        call.say(tone(0.8) + PAUSE)
        await call.until(lambda: llm.produced == 2, "the model's tokens, at the pause")
        await call.until(lambda: "We open at nine." in tts.texts, "its first piece, at the pause")
        assert E.TURN_START not in call.types()
        assert len(call.transport.sent) == sent  # held: nothing said before the turn ends
        assert [t["role"] for t in call.store.turns] == ["assistant"]  # nor logged
        call.say(END)
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    assert len(llm.requests) == 1 and tts.texts.count("We open at nine.") == 1
    assert call.transport.answer_marks()[-1].startswith("t1-")
    user, answer = call.store.turns[-2:]
    assert answer["text"] == "We open at nine." and answer["metrics"].speculative is True
    assert call.first(E.RETRIEVAL_END).data["early"] is True
    types = call.types()
    assert types.index(E.TURN_START) < types.index(E.LLM_START)


async def test_an_early_answer_is_dropped_when_the_caller_speaks_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    stt = FakeStt(["What time do you", "What time do you open on Saturday?"])
    llm = EchoLlm()
    call = await start_call(settings, stt=stt, llm=llm)
    try:
        await call.greeted()
        call.say(tone(0.8) + PAUSE)
        await call.until(lambda: llm.requests, "the model asked at the first pause")
        call.say(tone(0.6) + PAUSE)  # they go on: a second pause
        await call.until(lambda: len(stt.calls) == 2, "the second pause transcribed")
        llm.gate.set()
        call.say(END)
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    assert [r[-1].content for r in llm.requests] == [
        "What time do you", "What time do you open on Saturday?"]
    assert llm.finished == 1  # the first stream was stopped, not run out
    user, answer = call.store.turns[-2:]
    assert user["text"] == "What time do you open on Saturday?"
    assert answer["text"] == "You asked: What time do you open on Saturday?"
    assert len(call.transport.answer_marks()) == 2  # the greeting and this one answer


async def test_a_tool_waits_for_the_end_of_the_turn(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, transfer_number="+15550009999")
    llm = FakeLlm()
    call = await start_call(settings, stt=FakeStt(["Can I talk to a real person?"]), llm=llm)
    try:
        await call.greeted()
        sent = len(call.transport.sent)
        call.say(tone(0.8) + PAUSE)
        await settled(call)
        assert len(call.transport.sent) == sent
        assert not [e for e in call.store.events if e["type"] == "tool"]
        call.say(END)
        await call.until(lambda: len(call.transport.answer_marks()) == 2, "the transfer phrase")
        call.ack()
        await call.until(lambda: ("transfer", "+15550009999") in call.transport.sent,
                         "the transfer")
    finally:
        await call.end()
    assert not llm.requests
    assert call.store.turns[-1]["metrics"].speculative is False
    tool = next(e for e in call.store.events if e["type"] == "tool")
    assert tool["tool"] == "transfer"
    assert call.first(E.RETRIEVAL_END).data == {"tool": Tool.TRANSFER, "early": False}


async def test_a_tool_asked_for_at_a_pause_never_fires_if_the_caller_speaks_on(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, transfer_number="+15550009999")
    stt = FakeStt(["Can I talk to a real person?", "Can I talk to a real person? No, wait."])
    call = await start_call(settings, stt=stt)
    try:
        await call.greeted()
        call.say(tone(0.8) + PAUSE)
        await settled(call)
        call.say(tone(0.6) + PAUSE)
        await call.until(lambda: len(stt.calls) == 2, "the second pause transcribed")
        await settled(call)
    finally:
        await call.end()
    assert not [kind for kind, _ in call.transport.sent if kind in ("transfer", "hang_up")]
    assert not [e for e in call.store.events if e["type"] == "tool"]


async def test_preparing_changes_nothing_and_leaves_messages_and_tools_alone(
        tmp_path: Path) -> None:
    agent = make_agent(tmp_path, transfer_number="+15550009999")
    conversation = Conversation("CAtest")
    assert await agent.prepare(conversation, "I'd like to leave a message") is None
    assert conversation.message is None
    assert await agent.prepare(conversation, "Can I talk to a real person?") is None
    assert await agent.prepare(conversation, "Okay, goodbye") is None
    reply = await agent.prepare(conversation, "What time do you open?")
    assert reply is not None and reply.tool is None
    assert conversation.history == [] and conversation.message is None
