"""One misbehaving Twilio-socket client for ``appliance bench --adversary``.

It cycles through the attacks the hardening is meant to hold against, beside the good simulated
calls, and counts what it tried and how each socket ended. Most attacks need only the socket
signature (which never changes, so anyone who saw it once has it); ``audio-flood`` and
``radio`` are a caller the webhook admitted (any phone caller can be one) who then abuses the
call: one-second payloads as fast as the socket takes them, or a caller who never stops talking.

The talker says real speech (the bench's own lines, back to back): a tone, which the first
version sent, is not speech to Silero, so the server never heard a word of it (its call log held
the greeting only) and the STT workers the attack was meant to load stayed idle.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from appliance.caller import twilio_wire as wire
from appliance.caller.report import CallFailed, new_sid
from appliance.config import Settings, signing_token
from appliance.core.audio import FRAME_BYTES

log = logging.getLogger(__name__)

RADIO_S = 20.0  # how long the caller who never stops talking talks, per round
CLOSE_WAIT_S = 30.0  # longest an attack waits for the server to close its socket
ACCEPTED = "accepted: the server started a call without a webhook"


class Adversary:
    def __init__(self, base_url: str, settings: Settings, http: httpx.AsyncClient,
                 voice: bytes) -> None:
        self.base_url = base_url
        self.settings = settings
        self.http = http
        self.voice = voice  # 8 kHz μ-law speech the talker loops
        self.tried: Counter[str] = Counter()
        self.endings: Counter[str] = Counter()  # how the server ended each attack's socket
        self.attacks: dict[str, Callable[[], Awaitable[str]]] = {
            "idle": self._idle, "no-ticket": self._no_ticket, "bad-sid": self._bad_sid,
            "garbage": self._garbage, "nested-json": self._nested, "burst": self._burst,
            "audio-flood": self._audio_flood, "radio": self._radio,
        }

    async def run(self) -> None:
        """Attack after attack until cancelled."""
        while True:
            for name, attack in self.attacks.items():
                self.tried[name] += 1
                try:
                    ending = await attack()
                except (CallFailed, OSError, TimeoutError) as err:
                    ending = f"refused: {type(err).__name__}"
                self.endings[_kind(ending)] += 1
                await asyncio.sleep(0.2)

    def result(self) -> dict[str, object]:
        """What it tried, how each socket ended, and how many the server took for a call
        without a ticket from the webhook (the target is 0)."""
        return {"tried": dict(self.tried), "endings": dict(self.endings),
                "accepted_without_webhook": self.endings[_kind(ACCEPTED)]}

    # --- plumbing ---------------------------------------------------------------------------

    async def _socket(self) -> ClientConnection:
        url = self.settings.public_base_url.replace("http", "ws", 1) + "/twilio/media"
        return await wire.open_socket(self.base_url, url, signing_token(self.settings),
                                      what="adversary socket")

    async def _start(self, call_sid: str, stream_sid: str,
                     parameters: dict[str, str]) -> ClientConnection:
        ws = await self._socket()
        await ws.send(json.dumps({"event": "start", "start": {
            "streamSid": stream_sid, "callSid": call_sid, "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        return ws

    async def _admitted(self) -> tuple[str, dict[str, str]]:
        """A call placed through the signed webhook, as Twilio places a real caller's."""
        call_sid = new_sid("CA")
        form = wire.ringing_form(call_sid, self.settings.twilio_account_sid, "+15550009999",
                                 "+15550002222")
        body = await wire.signed_post(self.http, self.base_url, self.settings.public_base_url,
                                      signing_token(self.settings),
                                      self.settings.public_base_url + wire.VOICE_PATH, form)
        target = wire.parse_twiml(body)  # Rejected (busy) propagates: counted as refused
        return call_sid, target.parameters

    # --- the attacks --------------------------------------------------------------------------

    async def _idle(self) -> str:
        return await _closed(await self._socket())

    async def _no_ticket(self) -> str:
        return await _closed(await self._start(new_sid("CA"), new_sid("MZ"), {}))

    async def _bad_sid(self) -> str:
        return await _closed(await self._start("CA1' OR 1=1", "MZ\n", {}))

    async def _garbage(self) -> str:
        ws = await self._socket()
        try:
            for i in range(300):
                await ws.send("{not json" if i % 2 else '{"event":"surprise"}')
        except ConnectionClosed:
            pass
        return await _closed(ws)

    async def _nested(self) -> str:
        ws = await self._socket()
        try:
            await ws.send("[" * 5000 + "]" * 5000)
            await ws.send('{"event":"start","start":' + "{\"a\":" * 2000 + "1" + "}" * 2001)
        except ConnectionClosed:
            pass
        return await _closed(ws)

    async def _burst(self) -> str:
        sockets = await asyncio.gather(*(self._socket() for _ in range(12)),
                                       return_exceptions=True)
        endings = await asyncio.gather(*(_closed(ws) for ws in sockets
                                         if isinstance(ws, ClientConnection)))
        return endings[0] if endings else "refused: all"

    async def _audio_flood(self) -> str:
        try:
            call_sid, parameters = await self._admitted()
        except wire.Rejected:
            return "refused: busy"
        ws = await self._start(call_sid, new_sid("MZ"), parameters)
        second = base64.b64encode(b"\x00" * 8000).decode()
        try:
            for _ in range(200):
                await ws.send(json.dumps({"event": "media", "media": {"payload": second}}))
        except ConnectionClosed:
            pass
        return await _closed(ws, admitted=True)

    async def _radio(self) -> str:
        return await self.talk(RADIO_S)

    async def talk(self, seconds: float) -> str:
        """An admitted caller who talks without a pause for ``seconds`` (:attr:`voice` looped,
        in real time), reading the server's replies and echoing its marks as Twilio does."""
        try:
            call_sid, parameters = await self._admitted()
        except wire.Rejected:
            return "refused: busy"
        stream_sid = new_sid("MZ")
        ws = await self._start(call_sid, stream_sid, parameters)
        listening = asyncio.create_task(_echo_marks(ws, stream_sid))
        loop = asyncio.get_running_loop()
        started = loop.time()
        frames = int(seconds / 0.02)
        try:
            for n in range(frames):
                i = n * FRAME_BYTES % (len(self.voice) - len(self.voice) % FRAME_BYTES)
                payload = base64.b64encode(self.voice[i:i + FRAME_BYTES]).decode()
                await ws.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                          "media": {"payload": payload}}))
                await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))
            await ws.send(json.dumps({"event": "stop"}))
        except ConnectionClosed:
            return ws.close_reason or "closed"
        finally:  # cancelled too (the level ended): hang up, or the call holds its slot
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await ws.close()
        return "completed: talked until done"


async def _echo_marks(ws: ClientConnection, stream_sid: str) -> None:
    """Read what the server sends; echo each mark (Twilio does once the audio before it has
    played), so the server's reply bookkeeping runs as on a real call."""
    try:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("event") == "mark":
                await ws.send(json.dumps({"event": "mark", "streamSid": stream_sid,
                                          "mark": message.get("mark", {})}))
    except (ConnectionClosed, ValueError):
        return


async def _closed(ws: ClientConnection, admitted: bool = False) -> str:
    """Read until the server closes ``ws`` (or give up and close it); how it ended. Audio on a
    socket no webhook ``admitted`` means the server started a call for it: "accepted"."""
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), CLOSE_WAIT_S)
            if not admitted and '"media"' in str(message):
                await ws.close()
                return ACCEPTED
    except ConnectionClosed:
        return ws.close_reason or "closed"
    except TimeoutError:
        await ws.close()
        return "not closed by the server"


def _kind(ending: str) -> str:
    """The reason key of a close reason ("refused: bad-ticket: call CA..." → "bad-ticket")."""
    parts = [p.strip() for p in ending.split(":")]
    if parts[0] == "refused" and len(parts) > 1:
        return parts[1]
    return parts[0][:40]
