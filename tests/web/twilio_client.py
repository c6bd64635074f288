"""A scriptable stand-in for Twilio's side of a media socket, for socket-level tests."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection

from appliance.caller import twilio_wire as wire
from appliance.config import Settings, signing_token
from appliance.core.audio import FRAME_BYTES, pcm16_to_ulaw8k

SILENCE = b"\xff" * FRAME_BYTES
AHEAD_S = 1.0  # how far ahead of real time tests send audio (within the server's burst budget)


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw8k((9000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 8000)


def sign(settings: Settings, url: str, params: dict[str, str]) -> str:
    return wire.sign(signing_token(settings), url, params)


async def place_call(base: str, settings: Settings, call_sid: str | None = None) -> tuple[str, str]:
    """Signed voice webhook; returns (call_sid, TwiML)."""
    call_sid = call_sid or "CA" + uuid.uuid4().hex
    form = wire.ringing_form(call_sid, settings.twilio_account_sid, "+15550001111", "+15550002222")
    async with httpx.AsyncClient() as client:
        twiml = await wire.signed_post(client, base, settings.public_base_url,
                                       signing_token(settings),
                                       settings.public_base_url + wire.VOICE_PATH, form)
    return call_sid, twiml


def start_message(settings: Settings, call_sid: str, stream_sid: str,
                  parameters: dict[str, str]) -> dict[str, Any]:
    return {"event": "start", "start": {
        "streamSid": stream_sid, "accountSid": settings.twilio_account_sid,
        "callSid": call_sid, "tracks": ["inbound"], "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


class MediaStream:
    """Opens the media socket (signed), sends Twilio's messages, collects what comes back."""

    def __init__(self, ws: ClientConnection, call_sid: str) -> None:
        self.ws = ws
        self.call_sid = call_sid
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.received: list[dict[str, Any]] = []
        self._seq = 0
        self._audio_start: float | None = None
        self._audio_s = 0.0  # audio sent so far
        self._opened = asyncio.get_running_loop().time()
        self._stream_s = 0.0  # the stream position of the next frame (its timestamp)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, settings: Settings, call_sid: str, twiml: str) -> MediaStream:
        """Open the socket the webhook's ``twiml`` names and start the stream, handing its
        <Parameter>s (the socket ticket among them) back as Twilio does."""
        target = wire.parse_twiml(twiml)
        ws = await wire.open_socket(base, target.url, signing_token(settings),
                                    what="media socket")
        stream = cls(ws, call_sid)
        await stream.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await stream.send(start_message(settings, call_sid, stream.stream_sid, target.parameters))
        return stream

    async def _read(self) -> None:
        async for message in self.ws:
            self.received.append(json.loads(message))

    async def send(self, message: dict[str, Any]) -> None:
        self._seq += 1
        message.setdefault("sequenceNumber", str(self._seq))
        message.setdefault("streamSid", self.stream_sid)
        await self.ws.send(json.dumps(message))

    async def send_audio(self, ulaw: bytes, pace: float = 0.0) -> int:
        """Send ``ulaw`` in 20 ms frames, ``pace`` seconds apart; never further ahead of real
        time than the server's burst allowance (Twilio sends in real time; tests save time).

        Each frame carries Twilio's timestamp, ms since the stream started: Twilio streams
        all the time, so the time since the last send was silence this client did not send
        (a gap in the timestamps). Returns the timestamp of the first frame."""
        loop = asyncio.get_running_loop()
        self._stream_s = max(self._stream_s, loop.time() - self._opened)
        first_ms = round(self._stream_s * 1000)
        for i in range(0, len(ulaw), FRAME_BYTES):
            if self._audio_start is None:
                self._audio_start = loop.time()
            ahead = self._audio_s - (loop.time() - self._audio_start) - AHEAD_S
            if ahead > 0:
                await asyncio.sleep(ahead)
            payload = base64.b64encode(ulaw[i:i + FRAME_BYTES]).decode()
            timestamp = str(round(self._stream_s * 1000))
            await self.send({"event": "media", "media": {"track": "inbound", "payload": payload,
                                                         "chunk": str(i),
                                                         "timestamp": timestamp}})
            self._audio_s += FRAME_BYTES / 8000
            self._stream_s += FRAME_BYTES / 8000
            await asyncio.sleep(pace)
        return first_ms

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("event") == kind]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                kinds = [m["event"] for m in self.received][-20:]
                raise TimeoutError(f"timed out; received {kinds}")
            await asyncio.sleep(0.02)

    async def ack_marks(self, upto: int | None = None) -> None:
        """Echo marks received so far (the first ``upto`` of the call, if given), as Twilio does
        once the audio before each has played."""
        for mark in self.events("mark")[:upto]:
            if not mark.get("_acked"):
                mark["_acked"] = True
                await self.send({"event": "mark", "mark": mark["mark"]})

    async def stop(self) -> None:
        await self.send({"event": "stop", "stop": {"callSid": self.call_sid}})
        await self.ws.close()
        self._reader.cancel()


async def greeted_call(base: str, settings: Settings) -> tuple[str, MediaStream]:
    """Ring, open the media stream, and listen to the whole greeting (its mark acknowledged)."""
    call_sid, twiml = await place_call(base, settings)
    stream = await MediaStream.open(base, settings, call_sid, twiml)
    await stream.wait_for(lambda: stream.events("mark"))
    await stream.ack_marks()
    return call_sid, stream
