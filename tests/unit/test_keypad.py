"""The call-back number keyed on the phone pad: the collector on a clock the test moves, then the
message flow and the agent around it (no session, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.core.agent import Agent, Conversation, Tool
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm
from appliance.messages.flow import MessageFlow, Step
from appliance.messages.keypad import KEY_PAUSE_S, MAX_DIGITS, Entry, Keypad
from tests.session.harness import FakeClock
from tests.unit.test_message_flow import turn


def test_digits_collect_until_pound_and_star_starts_again() -> None:
    clock, keypad = FakeClock(), Keypad()
    assert [keypad.press(k, clock.now()) for k in "55"] == [Entry.DIGIT, Entry.DIGIT]
    assert keypad.press("*", clock.now()) is Entry.RESTART and keypad.digits == ""
    for key in "5552013344":
        clock.advance(0.3)
        keypad.press(key, clock.now())
    assert keypad.press("A", clock.now()) is Entry.IGNORED
    assert keypad.press("#", clock.now()) is Entry.DONE
    assert keypad.take() == "5552013344" and keypad.digits == ""


def test_a_pause_after_the_last_digit_ends_the_entry() -> None:
    clock, keypad = FakeClock(), Keypad()
    assert not keypad.paused(clock.now()) and keypad.wait_s(clock.now()) is None
    keypad.press("5", clock.now())
    clock.advance(KEY_PAUSE_S - 1)
    keypad.press("5", clock.now())  # a new key restarts the wait
    clock.advance(KEY_PAUSE_S - 0.5)
    assert not keypad.paused(clock.now()) and keypad.wait_s(clock.now()) == 0.5
    clock.advance(0.5)
    assert keypad.paused(clock.now()) and keypad.wait_s(clock.now()) == 0.0


def test_keys_past_the_longest_number_are_ignored() -> None:
    keypad = Keypad()
    entries = [keypad.press("1", 0.0) for _ in range(MAX_DIGITS + 3)]
    assert entries.count(Entry.IGNORED) == 3 and len(keypad.digits) == MAX_DIGITS


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    settings = load_settings(environ={"APPLIANCE_TRANSFER_NUMBER": "+15550009999"},
                             data_dir=str(tmp_path))
    return Agent(settings, FakeLlm(), None, Workers.sized(1, 1))


def asked_for_the_number(agent: Agent) -> Conversation:
    call = Conversation("c")
    turn(agent, call, "can I leave a message")
    assert "key it in" in turn(agent, call, "It's Ana Silva")[0]
    return call


def test_a_keyed_number_is_read_back_confirmed_and_stored(agent: Agent) -> None:
    call = asked_for_the_number(agent)
    presses = [agent.press(call, key, 10.0) for key in "5550201334"]
    assert all(p.tool is None and p.keyed is None and p.wait_s == KEY_PAUSE_S for p in presses)
    press = agent.press(call, "#", 11.0)
    assert press.keyed is not None and press.keyed.keys == "5550201334#"
    assert press.keyed.said == "I have 555-020-1334. Is that right?" and press.wait_s is None
    assert "your message" in turn(agent, call, "yes")[0]
    assert "call back on 555-020-1334" in turn(agent, call, "call me about Rex")[0]
    assert turn(agent, call, "yes")[1] is not None
    assert agent.press(call, "0", 12.0).tool is Tool.TRANSFER  # the flow is over


def test_zero_is_a_digit_not_a_transfer_while_the_number_is_keyed(agent: Agent) -> None:
    assert agent.press(Conversation("c"), "0", 0.0).tool is Tool.TRANSFER
    call = asked_for_the_number(agent)
    press = agent.press(call, "0", 0.0)
    assert press.tool is None and press.wait_s == KEY_PAUSE_S
    assert call.message is not None and call.message.keypad.digits == "0"


def test_the_pause_ends_the_entry_and_a_wrong_number_is_keyed_again(agent: Agent) -> None:
    call = asked_for_the_number(agent)
    for key in "5552013344":
        agent.press(call, key, 20.0)
    early = agent.key_pause(call, 20.0 + KEY_PAUSE_S - 1)
    assert early.keyed is None and early.wait_s == 1.0
    done = agent.key_pause(call, 20.0 + KEY_PAUSE_S)
    assert done.keyed is not None and done.keyed.keys == "5552013344"
    assert "key the number again" in turn(agent, call, "no")[0]
    for key in "5559990000#":
        press = agent.press(call, key, 30.0)
    assert press.keyed is not None and "555-999-0000" in press.keyed.said
    assert call.message is not None and call.message.step is Step.CHECK_NUMBER


def test_a_short_entry_is_asked_again_and_star_restarts(agent: Agent) -> None:
    call = asked_for_the_number(agent)
    for key in "555#":
        press = agent.press(call, key, 0.0)
    assert press.keyed is not None and "too short" in press.keyed.said
    restart = agent.press(call, "*", 0.0)
    assert restart.keyed is not None and "start over" in restart.keyed.said


def test_keying_over_a_read_back_replaces_the_number() -> None:
    flow = MessageFlow(step=Step.NUMBER)
    for key in "5552013344#":
        flow.press(key, 0.0)
    assert flow.step is Step.CHECK_NUMBER and flow.number == "5552013344"
    flow.press("#", 1.0)  # a stray pound confirms nothing and changes nothing
    assert flow.step is Step.CHECK_NUMBER
    flow.press("7", 1.0)
    assert flow.step is Step.NUMBER and flow.number == "" and flow.keypad.digits == "7"


def test_spoken_words_drop_a_half_keyed_number() -> None:
    flow = MessageFlow(step=Step.NUMBER)
    flow.press("5", 0.0)
    flow.answer("five five five two oh one three three four four")
    assert flow.number == "5552013344" and flow.keypad.digits == "" and flow.pause(99.0) is None
