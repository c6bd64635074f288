"""Call control chosen by the model, where the model can call functions.

A GPU preset's model (Qwen2.5-7B, Llama-3.1-8B) understands "I'd rather talk to someone who
can actually help" or "alright, that's everything" better than any list of phrasings, so when
the LLM engine declares tool calling (engines/base.py ``Llm.tool_calling``, set by the model
preset or ``APPLIANCE_LLM_TOOLS``) each turn first asks it whether the caller wants to hang up,
be put through, or leave a message. The tiny default model cannot: for it the rule-based intents
in core/agent.py decide, as they do whenever the model's choice fails. Either way the choice goes
through the same path: one tool per turn, its fixed phrase, then the action.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

from appliance.engines.base import ChatMessage, ToolCall, ToolSpec

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 4  # the offer to take a message is in the last answer; older turns add cost


class Choice(enum.Enum):
    END_CALL = "end_call"
    TRANSFER = "transfer_to_person"
    TAKE_MESSAGE = "take_message"


_SPECS = {
    Choice.END_CALL: ToolSpec(
        Choice.END_CALL.value,
        "Say goodbye and hang up. Only when the caller says goodbye or clearly has nothing "
        "more to ask; never because a question is hard."),
    Choice.TRANSFER: ToolSpec(
        Choice.TRANSFER.value,
        "Put the caller through to a human member of staff. Only when the caller asks to speak "
        "to a person (a human, someone, the front desk, a manager), not when they ask about "
        "one of the staff."),
    Choice.TAKE_MESSAGE: ToolSpec(
        Choice.TAKE_MESSAGE.value,
        "Take a message for the staff (name, call-back number, message). Only when the caller "
        "asks to leave a message, or says yes to the offer to take one."),
}
INSTRUCTIONS = ("Decide whether the caller's last words ask for one of the functions. If they "
                "do, call it. If they ask a question or say anything else, do not call a "
                "function: answer in a few words.")


def tools(*, can_transfer: bool) -> list[ToolSpec]:
    """The functions this line offers: a transfer only where there is a number to dial."""
    return [spec for choice, spec in _SPECS.items()
            if can_transfer or choice is not Choice.TRANSFER]


def messages(system_prompt: str, history: Sequence[ChatMessage], text: str) -> list[ChatMessage]:
    return [ChatMessage("system", f"{system_prompt}\n\n{INSTRUCTIONS}"),
            *history[-HISTORY_MESSAGES:], ChatMessage("user", text)]


def meaning(call: ToolCall | None, offered: Sequence[ToolSpec]) -> Choice | None:
    """The choice a call stands for; a function that was not offered is no choice at all."""
    if call is None:
        return None
    if call.name not in {spec.name for spec in offered}:
        log.warning("the model called %.40r, which it was not offered; ignored", call.name)
        return None
    return Choice(call.name)
