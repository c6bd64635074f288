import json

import pytest

from appliance.core.agent import Tool
from appliance.telephony import twilio_relay as tr

SETUP = {"type": "setup", "sessionId": "VX1", "accountSid": "AC1", "callSid": "CA1",
         "parentCallSid": "", "from": "+14151234567", "to": "+18881234567",
         "forwardedFrom": "+18881234567", "callerName": "", "direction": "inbound",
         "callType": "PSTN", "callStatus": "RINGING", "customParameters": {"callSid": "CA1"}}


def test_decodes_twilios_messages() -> None:
    setup = tr.decode(json.dumps(SETUP))
    assert isinstance(setup, tr.Setup)
    assert (setup.session_id, setup.call_sid, setup.from_, setup.to) == (
        "VX1", "CA1", "+14151234567", "+18881234567")
    assert setup.custom_parameters == {"callSid": "CA1"} and setup.call_type == "PSTN"
    prompt = tr.decode('{"type":"prompt","voicePrompt":"Hi there","lang":"en-US","last":true}')
    assert isinstance(prompt, tr.Prompt) and prompt.voice_prompt == "Hi there" and prompt.last
    partial = tr.decode('{"type":"prompt","voicePrompt":"Hi","lang":"en-US","last":false}')
    assert isinstance(partial, tr.Prompt) and not partial.last
    dtmf = tr.decode('{"type":"dtmf","digit":"1"}')
    assert isinstance(dtmf, tr.Dtmf) and dtmf.digit == "1"
    for duration in ('"460"', "460"):
        interrupt = tr.decode('{"type":"interrupt","utteranceUntilInterrupt":"Life is a",'
                              f'"durationUntilInterruptMs":{duration}}}')
        assert isinstance(interrupt, tr.Interrupt)
        assert interrupt.utterance_until_interrupt == "Life is a"
        assert str(interrupt.duration_until_interrupt_ms) == "460"
    error = tr.decode('{"type":"error","description":"Invalid message received"}')
    assert isinstance(error, tr.Error) and error.description == "Invalid message received"
    info = tr.decode('{"type":"info","name":"roundTripDelayMs","value":42}')
    assert isinstance(info, tr.Info) and info.value == 42


@pytest.mark.parametrize("frame, reason", [
    ("not json", "not JSON"),
    ('{"type":"surprise"}', "unknown message type"),
    ('{"voicePrompt":"hi"}', "invalid message"),
    ('{"type":"prompt"}', "invalid message"),
    ('{"type":"prompt","voicePrompt":"hi","last":"maybe"}', "invalid message"),
    ("[1,2]", "invalid message"),
    ("x" * (tr.MAX_MESSAGE_BYTES + 1), "oversize message"),
    ('{"type":"info","name":"x","value":' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"type":"dtmf","digit":"1","x":' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    (json.dumps({"type": "prompt", "voicePrompt": "a" * (tr.MAX_PROMPT_CHARS + 1)}),
     "oversize prompt"),
])
def test_bad_messages_are_refused_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(tr.ProtocolError, match=reason):
        tr.decode(frame)


def test_outbound_messages_match_the_wire_format() -> None:
    assert json.loads(tr.encode(tr.Text(token="We open", last=False))) == {
        "type": "text", "token": "We open", "last": False}
    assert json.loads(tr.encode(tr.Text(token="", last=True))) == {
        "type": "text", "token": "", "last": True}
    assert json.loads(tr.encode(tr.End(handoff_data='{"tool":"transfer"}'))) == {
        "type": "end", "handoffData": '{"tool":"transfer"}'}


def test_both_directions_round_trip() -> None:
    setup = tr.Setup(session_id="VX1", call_sid="CA1", from_="+1555", custom_parameters={"a": "b"})
    wire = json.loads(tr.encode(setup))
    assert wire["from"] == "+1555" and wire["sessionId"] == "VX1" and wire["type"] == "setup"
    assert tr.decode(tr.encode(setup)) == setup
    text = tr.Text(token="Hi", last=True)
    assert tr.decode_outbound(tr.encode(text)) == text
    with pytest.raises(tr.ProtocolError, match="unknown message type"):
        tr.decode_outbound('{"type":"play","source":"https://x/a.mp3"}')


def test_handoff_data_names_the_tool_and_nothing_else_is_trusted() -> None:
    known = {tool.value for tool in Tool}
    for tool in Tool:
        assert tr.handoff_tool(tr.handoff_data(tool.value, "CA1"), known) == tool.value
    for junk in ("", "not json", "[]", '{"tool":"launch"}', '"transfer"', "null"):
        assert tr.handoff_tool(junk, known) is None
