"""Twilio ConversationRelay messages as msgspec Structs: pure decode/encode, no I/O.

Twilio does the speech; the socket carries text. Both directions are tagged unions on ``type``,
so the simulated client and the tests build Twilio's side from the same Structs the server reads.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import msgspec

from appliance.telephony.errors import ProtocolError

MAX_MESSAGE_BYTES = 16 * 1024  # a setup with its parameters is ~1 KB; anything huge is abuse
MAX_PROMPT_CHARS = 1000  # ~20 s of speech is ~400 characters; longer is not a caller talking


class Setup(msgspec.Struct, tag_field="type", tag="setup", rename="camel", omit_defaults=True):
    session_id: str = ""
    account_sid: str = ""
    call_sid: str = ""
    parent_call_sid: str = ""
    from_: str = msgspec.field(default="", name="from")
    to: str = ""
    forwarded_from: str = ""
    caller_name: str = ""
    direction: str = ""
    call_type: str = ""
    call_status: str = ""
    custom_parameters: dict[str, str] = {}


class Prompt(msgspec.Struct, tag_field="type", tag="prompt", rename="camel"):
    voice_prompt: str
    lang: str = ""
    last: bool = True  # false for partial prompts (only with partialPrompts="true")


class Dtmf(msgspec.Struct, tag_field="type", tag="dtmf"):
    digit: str


class Interrupt(msgspec.Struct, tag_field="type", tag="interrupt", rename="camel"):
    utterance_until_interrupt: str = ""
    duration_until_interrupt_ms: int | str = 0  # Twilio's own examples show both


class Error(msgspec.Struct, tag_field="type", tag="error"):
    description: str = ""


class Info(msgspec.Struct, tag_field="type", tag="info"):
    name: str = ""
    value: Any = None


class Text(msgspec.Struct, tag_field="type", tag="text"):
    token: str
    last: bool = False


class End(msgspec.Struct, tag_field="type", tag="end", rename="camel"):
    handoff_data: str = ""


InboundMessage = Setup | Prompt | Dtmf | Interrupt | Error | Info
OutboundMessage = Text | End

_inbound = msgspec.json.Decoder(InboundMessage)
_outbound = msgspec.json.Decoder(OutboundMessage)
_encoder = msgspec.json.Encoder()


def decode(frame: str | bytes) -> InboundMessage:
    """Parse one message from Twilio, raising ProtocolError with a short reason on anything bad."""
    message = _decode(_inbound, frame)
    if isinstance(message, Prompt) and len(message.voice_prompt) > MAX_PROMPT_CHARS:
        raise ProtocolError(f"oversize prompt ({len(message.voice_prompt)} characters)")
    return message


def decode_outbound(frame: str | bytes) -> OutboundMessage:
    """Parse one message the app sent (for the simulated Twilio side)."""
    return _decode(_outbound, frame)


def _decode(decoder: msgspec.json.Decoder[Any], frame: str | bytes) -> Any:
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"oversize message ({len(frame)} bytes)")
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as err:
        if str(err).endswith("at `$.type`"):
            raise ProtocolError(f"unknown message type: {err}") from err
        raise ProtocolError(f"invalid message: {err}") from err
    except msgspec.DecodeError as err:
        raise ProtocolError(f"not JSON: {err}") from err
    except RecursionError as err:  # msgspec's answer to ~1,000 nested arrays, not DecodeError
        raise ProtocolError("JSON nested too deeply") from err


def encode(message: InboundMessage | OutboundMessage) -> bytes:
    return _encoder.encode(message)


def handoff_data(tool: str, call_sid: str) -> str:
    """The ``end`` message's payload; Twilio posts it back to the <Connect> action URL."""
    return json.dumps({"tool": tool, "callSid": call_sid})


def handoff_tool(data: str, known: Collection[str]) -> str | None:
    """The tool a ``HandoffData`` form field names, if it is one of ``known``; else None."""
    try:
        tool = json.loads(data).get("tool")
    except (ValueError, AttributeError):
        return None
    return tool if isinstance(tool, str) and tool in known else None
