import base64
import json

import pytest

from appliance.telephony import twilio_media as tm

START = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
         "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1",
                   "tracks": ["inbound"], "customParameters": {"from": "+1555"},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                   "channels": 1}}}


def test_decodes_the_real_message_sequence() -> None:
    start = tm.decode(json.dumps(START))
    assert isinstance(start, tm.Start)
    assert start.start.call_sid == "CA1" and start.start.custom_parameters == {"from": "+1555"}
    media = tm.decode(json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
                                  "media": {"track": "inbound", "chunk": "1", "timestamp": "5",
                                            "payload": base64.b64encode(b"\xff" * 160).decode()}}))
    assert isinstance(media, tm.Media) and tm.media_audio(media) == b"\xff" * 160
    assert isinstance(tm.decode('{"event":"connected","protocol":"Call","version":"1.0.0"}'),
                      tm.Connected)
    mark = tm.decode('{"event":"mark","streamSid":"MZ1","mark":{"name":"t1-0"}}')
    assert isinstance(mark, tm.Mark) and mark.mark.name == "t1-0"
    dtmf = tm.decode(
        '{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}')
    assert isinstance(dtmf, tm.Dtmf) and dtmf.dtmf.digit == "5"
    assert isinstance(tm.decode('{"event":"stop","streamSid":"MZ1","stop":{}}'), tm.Stop)


@pytest.mark.parametrize("frame, reason", [
    ("not json", "not JSON"),
    ('{"event":"bogus"}', "invalid message"),
    ('{"event":"media","media":{}}', "invalid message"),
    ("[1,2]", "invalid message"),
    ("x" * (tm.MAX_MESSAGE_BYTES + 1), "oversize"),
    ('{"event":"stop","x":' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"event":"media","media":' + '{"a":' * 2500 + "1" + "}" * 2501, "nested too deeply"),
])
def test_bad_frames_are_refused_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(tm.ProtocolError, match=reason):
        tm.decode(frame)


def test_bad_base64_and_oversize_payload() -> None:
    bad = tm.Media(media=tm.MediaInfo(payload="!!!not base64"))
    with pytest.raises(tm.ProtocolError, match="base64"):
        tm.media_audio(bad)
    huge = tm.Media(media=tm.MediaInfo(payload=base64.b64encode(b"\xff" * 9000).decode()))
    with pytest.raises(tm.ProtocolError, match="oversize"):
        tm.media_audio(huge)


def test_outbound_messages_match_the_wire_format() -> None:
    assert json.loads(tm.media_message("MZ1", b"\x00\xff")) == {
        "event": "media", "streamSid": "MZ1", "media": {"payload": "AP8="}}
    assert json.loads(tm.mark_message("MZ1", "m")) == {
        "event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}}
    assert json.loads(tm.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(("timestamp", "ms"), [
    ("5", 5), ("123456", 123456), ("", None), ("-20", None), ("1e3", None), ("9" * 13, None)])
def test_media_timestamps_place_frames_or_are_ignored(timestamp: str, ms: int | None) -> None:
    frame = {"event": "media", "media": {"payload": "/w==", "timestamp": timestamp}}
    message = tm.decode(json.dumps(frame))
    assert isinstance(message, tm.Media) and tm.media_timestamp(message) == ms
