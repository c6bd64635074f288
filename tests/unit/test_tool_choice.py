"""Call control chosen by a model that declares tool calling, through ``Agent.reply`` with a fake
LLM scripted to call functions: what each call becomes, what is offered, and that the rules
take over where the model cannot (not declared) or fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.core.agent import Agent, Conversation, Reply, Tool
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm
from appliance.models.resolve import CHATML_TOOLS, llm_tool_format

CALLS = {"I'm all set, cheers": "end_call", "someone who can actually help, please":
         "transfer_to_person", "tell Dr. Chen I rang": "take_message"}


def agent_for(tmp_path: Path, llm: FakeLlm, transfer: str = "+15550009999") -> Agent:
    settings = load_settings(environ={"APPLIANCE_TRANSFER_NUMBER": transfer},
                             data_dir=str(tmp_path))
    return Agent(settings, llm, None, Workers.sized(1, 1))


def reply(agent: Agent, call: Conversation, text: str) -> tuple[Reply, str]:
    async def run() -> tuple[Reply, str]:
        answer = await agent.reply(call, text)
        return answer, "".join([t async for t in answer.tokens])
    return asyncio.run(run())


def test_the_model_s_calls_become_the_same_tools_and_the_message_flow(tmp_path: Path) -> None:
    llm = FakeLlm(["We open at nine."], calls=CALLS)
    agent = agent_for(tmp_path, llm)
    # Phrasings no rule knows: only the model's choice can make these tools.
    assert reply(agent, Conversation("a"), "I'm all set, cheers")[0].tool is Tool.END_CALL
    transfer, said = reply(agent, Conversation("b"), "someone who can actually help, please")
    assert transfer.tool is Tool.TRANSFER and said == agent.settings.transfer_phrase
    call = Conversation("c")
    taking, said = reply(agent, call, "tell Dr. Chen I rang")
    assert taking.tool is None and "your name" in said and call.message is not None
    asked = len(llm.tool_requests)
    reply(agent, call, "Ana")  # inside the flow the steps are rules: the model is not asked
    assert len(llm.tool_requests) == asked
    [offered] = {tuple(t.name for t in tools) for _, tools in llm.tool_requests}
    assert offered == ("end_call", "transfer_to_person", "take_message")
    messages, _ = llm.tool_requests[0]
    assert messages[0].role == "system" and "call it" in messages[0].content
    assert messages[-1].content == "I'm all set, cheers"


def test_no_call_means_an_answer_even_where_a_rule_would_fire(tmp_path: Path) -> None:
    agent = agent_for(tmp_path, FakeLlm(["We open at nine."], calls={}))
    answer, said = reply(agent, Conversation("a"), "Goodbye, can you tell me your hours?")
    assert answer.tool is None and said == "We open at nine."


def test_without_a_number_transfer_is_not_offered_nor_obeyed(tmp_path: Path) -> None:
    llm = FakeLlm(["We open at nine."], calls=CALLS)
    agent = agent_for(tmp_path, llm, transfer="")
    answer, said = reply(agent, Conversation("a"), "someone who can actually help, please")
    assert answer.tool is None and said == "We open at nine."
    assert [t.name for t in llm.tool_requests[0][1]] == ["end_call", "take_message"]


def test_a_model_that_declares_no_tool_calling_is_never_asked(tmp_path: Path) -> None:
    llm = FakeLlm(["We open at nine."])
    agent = agent_for(tmp_path, llm)
    assert reply(agent, Conversation("a"), "Thanks, goodbye!")[0].tool is Tool.END_CALL
    assert reply(agent, Conversation("b"), "I'm all set, cheers")[0].tool is None
    assert llm.tool_requests == []


def test_a_failed_choice_falls_back_to_the_rules(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    llm = FakeLlm(["We open at nine."], calls=CALLS)
    llm.error = RuntimeError("server gone")
    agent = agent_for(tmp_path, llm)
    assert reply(agent, Conversation("a"), "Can I talk to a real person?")[0].tool is Tool.TRANSFER
    assert "the rules decide" in caplog.text and "server gone" in caplog.text


@pytest.mark.parametrize("environ, expected", [
    ({}, ""),  # the tiny default model: rules
    ({"APPLIANCE_MODELS": "gpu-small"}, CHATML_TOOLS),
    ({"APPLIANCE_MODELS": "gpu-large"}, CHATML_TOOLS),
    ({"APPLIANCE_MODELS": "gpu-small", "APPLIANCE_LLM_TOOLS": "off"}, ""),
    ({"APPLIANCE_LLM_TOOLS": "on"}, CHATML_TOOLS),
    ({"APPLIANCE_MODELS": "gpu-small", "APPLIANCE_LLM_MODEL": "/m.gguf"}, ""),  # no word on it
    ({"APPLIANCE_LLM_TOOLS": "on", "APPLIANCE_LLM_BACKEND": "openai"}, ""),  # the server's
])
def test_the_preset_or_the_setting_declares_tool_calling(tmp_path: Path, environ: dict[str, str],
                                                         expected: str) -> None:
    settings = load_settings(environ=environ, data_dir=str(tmp_path))
    assert llm_tool_format(settings) == expected


def test_the_gpu_phrasing_table_has_thirty_each_way_and_no_phrasing_twice() -> None:
    from tests.e2e import tool_phrasings as p

    tables = [p.HANG_UP, p.NOT_HANG_UP, p.TRANSFER, p.NOT_TRANSFER, p.TAKE_MESSAGE,
              p.NOT_TAKE_MESSAGE]
    assert all(len(table) >= 30 for table in tables)
    for yes, no in zip(tables[::2], tables[1::2], strict=True):
        assert not set(yes) & set(no) and len(set(yes)) == len(yes)
