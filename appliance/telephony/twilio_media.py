"""Twilio Media Streams messages as msgspec Structs: pure decode/encode, no I/O.

Twilio sends numbers such as ``sequenceNumber`` as strings; the structs keep them as sent.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from appliance.telephony.errors import ProtocolError

MAX_MESSAGE_BYTES = 16 * 1024  # a 20 ms frame is ~400 bytes of JSON; anything huge is abuse
MAX_PAYLOAD_BYTES = 8000  # one second of μ-law: far more than any real frame


class MediaFormat(msgspec.Struct, rename="camel"):
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class StartInfo(msgspec.Struct, rename="camel"):
    stream_sid: str = ""
    account_sid: str = ""
    call_sid: str = ""
    tracks: list[str] = []
    custom_parameters: dict[str, str] = {}
    media_format: MediaFormat = msgspec.field(default_factory=MediaFormat)


class MediaInfo(msgspec.Struct):
    payload: str
    track: str = "inbound"
    chunk: str = ""
    timestamp: str = ""


class MarkInfo(msgspec.Struct):
    name: str


class DtmfInfo(msgspec.Struct):
    digit: str
    track: str = "inbound_track"


class Connected(msgspec.Struct, tag_field="event", tag="connected"):
    protocol: str = ""
    version: str = ""


class Start(msgspec.Struct, tag_field="event", tag="start", rename="camel"):
    start: StartInfo
    stream_sid: str = ""
    sequence_number: str = ""


class Media(msgspec.Struct, tag_field="event", tag="media", rename="camel"):
    media: MediaInfo
    stream_sid: str = ""
    sequence_number: str = ""


class Mark(msgspec.Struct, tag_field="event", tag="mark", rename="camel"):
    mark: MarkInfo
    stream_sid: str = ""
    sequence_number: str = ""


class Dtmf(msgspec.Struct, tag_field="event", tag="dtmf", rename="camel"):
    dtmf: DtmfInfo
    stream_sid: str = ""
    sequence_number: str = ""


class Stop(msgspec.Struct, tag_field="event", tag="stop", rename="camel"):
    stream_sid: str = ""
    sequence_number: str = ""


InboundMessage = Connected | Start | Media | Mark | Dtmf | Stop

_decoder = msgspec.json.Decoder(InboundMessage)
_encoder = msgspec.json.Encoder()


def decode(frame: str | bytes) -> InboundMessage:
    """Parse one Twilio frame, raising ProtocolError with a short reason on anything bad."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"oversize frame ({len(frame)} bytes)")
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError as err:
        raise ProtocolError(f"invalid message: {err}") from err
    except msgspec.DecodeError as err:
        raise ProtocolError(f"not JSON: {err}") from err
    except RecursionError as err:  # msgspec's answer to ~1,000 nested arrays, not DecodeError
        raise ProtocolError("JSON nested too deeply") from err


def media_audio(message: Media) -> bytes:
    """The μ-law bytes of a media frame; bad base64 or oversize audio is a ProtocolError."""
    if len(message.media.payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise ProtocolError("oversize media payload")
    try:
        return base64.b64decode(message.media.payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(f"bad base64 payload: {err}") from err


def media_timestamp(message: Media) -> int | None:
    """Twilio's timestamp of a media frame (ms since the stream started); None when absent or
    not a number (a peer's mistake costs the frame its place, never the call)."""
    text = message.media.timestamp
    return int(text) if text.isdigit() and len(text) <= 12 else None


def media_message(stream_sid: str, ulaw: bytes) -> bytes:
    return _encoder.encode({"event": "media", "streamSid": stream_sid,
                            "media": {"payload": base64.b64encode(ulaw).decode("ascii")}})


def mark_message(stream_sid: str, name: str) -> bytes:
    return _encoder.encode({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> bytes:
    return _encoder.encode({"event": "clear", "streamSid": stream_sid})
