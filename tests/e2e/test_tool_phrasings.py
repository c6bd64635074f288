"""A function-calling GPU model choosing hang-up, transfer and take-a-message on ≥ 30 phrasings
each way (tests/e2e/tool_phrasings.py), through ``Agent.choose``: the real prompt, tools and
chat handler of the configured preset.

Needs the GPU preset's model (gigabytes; a CPU box would take many minutes per phrasing), so it
runs only when asked: ``APPLIANCE_GPU_TESTS=1`` with ``APPLIANCE_MODELS=gpu-small`` (or
gpu-large), as scripts/gpu-check.sh does. A model cannot be perfect on phrasings it never saw:
each table must be ≥ 90 % right, and every miss is printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from appliance.config import load_settings
from appliance.core.agent import Agent, Conversation
from appliance.core.tool_choice import Choice
from appliance.core.workers import Workers
from appliance.wiring import load_llm
from tests.e2e import tool_phrasings as p

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    os.environ.get("APPLIANCE_GPU_TESTS") != "1",
    reason="needs a GPU preset's function-calling model: APPLIANCE_GPU_TESTS=1 "
           "APPLIANCE_MODELS=gpu-small (scripts/gpu-check.sh runs it)")]

FLOOR = 0.9
TABLES = [
    ("hang up", Choice.END_CALL, p.HANG_UP, p.NOT_HANG_UP),
    ("transfer", Choice.TRANSFER, p.TRANSFER, p.NOT_TRANSFER),
    ("take a message", Choice.TAKE_MESSAGE, p.TAKE_MESSAGE, p.NOT_TAKE_MESSAGE),
]


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    settings = load_settings(environ={**os.environ, "APPLIANCE_TRANSFER_NUMBER": "+15550009999"})
    llm = load_llm(settings, instances=1)
    if not llm.tool_calling:
        pytest.fail(f"{llm.info.name} (preset {settings.models!r}) declares no tool calling")
    workers = Workers.sized(1, 1)
    yield Agent(settings, llm, None, workers)
    workers.shutdown()


@pytest.mark.parametrize("what, choice, yes, no", TABLES, ids=[t[0] for t in TABLES])
def test_the_model_chooses_on_the_phrasing_table(agent: Agent, what: str, choice: Choice,
                                                 yes: list[str], no: list[str]) -> None:
    assert len(yes) >= 30 and len(no) >= 30

    async def choose(text: str) -> Choice | None:
        return await agent.choose(Conversation("gpu-table"), text)

    misses = [(text, got) for text in yes if (got := asyncio.run(choose(text))) is not choice]
    misses += [(text, got) for text in no if (got := asyncio.run(choose(text))) is choice]
    for text, got in misses:
        print(f"{what}: {text!r} -> {got}")
    right = 1 - len(misses) / (len(yes) + len(no))
    print(f"{what}: {right:.0%} of {len(yes) + len(no)} phrasings")
    assert right >= FLOOR, misses
