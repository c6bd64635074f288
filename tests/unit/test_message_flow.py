"""Taking a message, turn by turn, through the agent (no model involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.core.agent import Agent, Conversation
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm
from appliance.messages.flow import TakenMessage, spoken_digits


def turn(agent: Agent, conversation: Conversation, text: str) -> tuple[str, TakenMessage | None]:
    async def run() -> tuple[str, TakenMessage | None]:
        reply = await agent.reply(conversation, text)
        said = "".join([t async for t in reply.tokens])
        conversation.add("user", text)
        conversation.add("assistant", said)
        return said, reply.message
    return asyncio.run(run())


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(load_settings(environ={}, data_dir=str(tmp_path)), FakeLlm(), None,
                 Workers.sized(1, 1))


def test_a_spoken_number_is_read_back_and_the_message_stored(agent: Agent) -> None:
    call = Conversation("c")
    assert "your name" in turn(agent, call, "can I leave a message")[0]
    assert "call you back" in turn(agent, call, "my name is Ana Silva")[0]
    assert "message" in turn(agent, call, "five five five two oh one three three four four")[0]
    read_back, _ = turn(agent, call, "please ask Dr. Lindqvist to call about Rex.")
    assert read_back == ("Let me read that back: Ana Silva, call back on 555-201-3344, message: "
                         "please ask Dr. Lindqvist to call about Rex. Is that right?")
    said, taken = turn(agent, call, "yes that's right")
    assert "passed your message on" in said
    assert taken == TakenMessage("Ana Silva", "5552013344",
                                 "please ask Dr. Lindqvist to call about Rex.")
    assert call.message is None


def test_the_caller_id_is_the_default_and_the_offer_can_be_accepted(agent: Agent) -> None:
    call = Conversation("c")
    call.add("assistant", agent.unknown_answer)  # "... I can take a message if you like."
    assert "your name" in turn(agent, call, "yes please")[0]
    turn(agent, call, "Tom")
    turn(agent, call, "this number is fine")
    assert "the number you're calling from" in turn(agent, call, "call me back")[0]
    assert turn(agent, call, "yes")[1] == TakenMessage("Tom", "", "call me back")


def test_a_new_question_after_the_offer_is_not_a_yes(agent: Agent) -> None:
    call = Conversation("c")
    call.add("assistant", agent.unknown_answer)
    turn(agent, call, "ok and what are your hours on friday")
    assert call.message is None


def test_a_wrong_read_back_starts_again(agent: Agent) -> None:
    call = Conversation("c")
    for text in ("take a message", "Jo", "555 201 3344", "hello"):
        turn(agent, call, text)
    said, taken = turn(agent, call, "no that's wrong")
    assert taken is None and "start again" in said and call.message is not None


def test_an_unclear_number_is_asked_again_once(agent: Agent) -> None:
    call = Conversation("c")
    for text in ("leave a message", "Jo"):
        turn(agent, call, text)
    assert "digit by digit" in turn(agent, call, "um the usual")[0]
    assert "your message" in turn(agent, call, "still unclear")[0]  # then the caller ID


@pytest.mark.parametrize("text, digits", [
    ("555 201 3344", "5552013344"),
    ("five five five, two oh one, double three four four", "5552013344"),
    ("(555) 201-3344", "5552013344"),
])
def test_spoken_digits(text: str, digits: str) -> None:
    assert spoken_digits(text) == digits
