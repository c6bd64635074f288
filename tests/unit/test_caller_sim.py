"""``run_call`` against a tiny fake appliance: webhook via httpx, media over a loopback socket.

The fake greets, answers each caller utterance 200 ms after it ends with a tone and a mark, and
clears its audio when the caller talks over a reply, so the whole script runs in real time but
only for a couple of seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import ServerConnection, serve

from appliance.caller.audio_source import Utterance, from_wav
from appliance.caller.report import CallFailed, CallOptions, CallReport
from appliance.caller.twilio_sim import run_call
from appliance.core.audio import FRAME_BYTES, frames, is_voiced, pcm16_to_ulaw8k

TOKEN = "test-auth-token"
PUBLIC = "https://agent.example.com"
STREAM_URL = "wss://agent.example.com/twilio/media"
ENDPOINT_FRAMES = 10  # the fake's end of turn: 200 ms of caller silence
FAST = {"greeting_quiet_s": 0.2, "reply_quiet_s": 0.3, "turn_timeout_s": 3.0, "record_settle_s": 0}


def tone(seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return pcm16_to_ulaw8k((np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16), 8000)


def utterance(label: str, seconds: float = 0.2) -> Utterance:
    return Utterance.from_ulaw(label, tone(seconds, 300.0) + b"\xff" * 400)


class FakeAppliance:
    """The server side of the wire protocol, just enough to exercise the caller."""

    def __init__(
        self, reply_s: float = 0.3, hang_up_after_greeting: bool = False, ws_token: str = TOKEN,
        hold_s: float = 0.0,
    ) -> None:
        self.reply_s = reply_s
        self.hold_s = hold_s  # say "one moment" first, and the reply this much later
        self.ws_token = ws_token
        self.hang_up_after_greeting = hang_up_after_greeting
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.echoed: list[str] = []
        self.unechoed: list[str] = []
        self.turns: list[dict[str, Any]] = []
        self.signature_ok = False
        self.cleared_at = 0.0
        self.said_at: dict[str, float] = {}  # mark → when its audio went out
        self.heard_at = 0.0  # when the caller's latest voiced frame arrived
        self.replied_after: list[float] = []  # per reply: its start, after that frame
        self.voiced_at: list[float] = []  # when each of the caller's voiced frames arrived
        self._voiced_run = self._silent_run = 0
        self._heard = False
        self._later: set[asyncio.Task[None]] = set()

    def webhook(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/api/calls/"):
            return httpx.Response(200, json={"call": {}, "turns": self.turns, "events": []})
        form = dict(parse_qsl(request.content.decode()))
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(TOKEN).validate(PUBLIC + "/twilio/voice", form, signature):
            return httpx.Response(403)
        assert form["CallSid"].startswith("CA") and len(form["CallSid"]) == 34
        assert form["CallStatus"] == "ringing" and form["Direction"] == "inbound"
        twiml = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{STREAM_URL}">'
            '<Parameter name="tenant" value="acme"/></Stream></Connect></Response>'
        )
        return httpx.Response(200, text=twiml, headers={"Content-Type": "text/xml"})

    def check_signature(self, connection: ServerConnection, request: Any) -> Any:
        expected = RequestValidator(self.ws_token).compute_signature(STREAM_URL, {})
        self.signature_ok = request.headers.get("X-Twilio-Signature") == expected
        if self.signature_ok:
            return None
        return connection.respond(HTTPStatus.FORBIDDEN, "bad signature\n")

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None and ws.request.path == "/twilio/media"
        async for raw in ws:
            message = json.loads(raw)
            self.messages.append((time.monotonic(), message))
            event = message["event"]
            if event == "start":
                await self._say(ws, message["streamSid"], tone(0.3), "greeting", "Hello")
                if self.hang_up_after_greeting:
                    return
            elif event == "media":
                payload = base64.b64decode(message["media"]["payload"])
                await self._hear(ws, message["streamSid"], payload)
            elif event == "mark":
                self.echoed.append(message["mark"]["name"])
                self.unechoed.remove(message["mark"]["name"])
            elif event == "stop":
                return

    async def _say(
        self, ws: ServerConnection, sid: str, audio: bytes, mark: str, text: str
    ) -> None:
        self.turns.append({"role": "assistant", "text": text, "heard_text": None,
                           "interrupted": False})
        self.said_at[mark] = time.monotonic()
        for frame in frames(audio):  # streamed faster than real time, as a TTS would
            await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {
                "payload": base64.b64encode(frame).decode()}}))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": mark}}))
        self.unechoed.append(mark)

    async def _hear(self, ws: ServerConnection, sid: str, frame: bytes) -> None:
        if is_voiced(frame):
            self.heard_at = time.monotonic()
            self.voiced_at.append(self.heard_at)
            self._voiced_run, self._silent_run, self._heard = self._voiced_run + 1, 0, True
            if self._voiced_run == 3 and self.unechoed:  # barge-in
                await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
                self.cleared_at = time.monotonic()
                self.turns[-1].update(interrupted=True, heard_text="partial")
            return
        self._voiced_run = 0
        if self._heard:
            self._silent_run += 1
            if self._silent_run == ENDPOINT_FRAMES:
                self._heard = False
                number = sum(turn["role"] == "user" for turn in self.turns) + 1
                self.turns.append({"role": "user", "text": f"caller {number}", "heard_text": None,
                                   "interrupted": False})
                reply = tone(self.reply_s, 600.0)
                self.replied_after.append(time.monotonic() - self.heard_at)
                if not self.hold_s:
                    await self._say(ws, sid, reply, f"reply-{number}", f"reply {number}")
                    return
                await self._say(ws, sid, tone(0.3, 500.0), f"hold-{number}", "")
                self.turns.pop()  # the hold phrase is no turn of its own

                async def answer() -> None:
                    await asyncio.sleep(self.hold_s)
                    await self._say(ws, sid, reply, f"reply-{number}", f"reply {number}")

                task = asyncio.create_task(answer())
                self._later.add(task)
                task.add_done_callback(self._later.discard)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [message for _, message in self.messages if message["event"] == name]


async def call(fake: FakeAppliance, **options: Any) -> CallReport:
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.check_signature) as server:
        port = server.sockets[0].getsockname()[1]
        where = {"base_url": f"http://127.0.0.1:{port}", "public_base_url": PUBLIC}
        opts = CallOptions(**(where | {"auth_token": TOKEN} | FAST | options))
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.webhook)) as http:
            return await run_call(opts, http)


def test_two_turn_call_follows_the_twilio_protocol(tmp_path) -> None:
    fake = FakeAppliance()
    out = tmp_path / "heard.wav"
    script = (utterance("one"), utterance("two"))
    started = time.monotonic()
    report = asyncio.run(call(fake, utterances=script, dtmf="12", out=str(out)))
    elapsed = time.monotonic() - started

    assert report.ok, report
    assert fake.signature_ok
    assert report.greeting_s is not None and report.greeting_s > 0
    assert [t.said for t in report.turns] == ["one", "two"]
    for turn, server_s in zip(report.turns, fake.replied_after, strict=True):
        # Voice to voice spans at least what the server took between hearing and answering.
        assert turn.v2v_s is not None and turn.v2v_s >= server_s, (turn, server_s)
        assert turn.v2v_played_s is not None and turn.v2v_played_s >= turn.v2v_s - 0.025
        assert not turn.clear_received and not turn.timed_out
    assert report.greeting == "Hello"
    assert (report.turns[1].transcript, report.turns[1].agent) == ("caller 2", "reply 2")

    kinds = [message["event"] for _, message in fake.messages]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop"
    start = fake.messages[1][1]
    assert start["streamSid"] == report.stream_sid and report.stream_sid.startswith("MZ")
    assert start["start"]["callSid"] == report.call_sid
    assert start["start"]["customParameters"] == {"tenant": "acme"}
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["mediaFormat"] == media_format
    assert [int(m["sequenceNumber"]) for _, m in fake.messages[1:]] == list(range(1, len(kinds)))

    media = fake.events("media")
    assert [int(m["media"]["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert all(int(m["media"]["timestamp"]) == 20 * i for i, m in enumerate(media))
    assert all(len(base64.b64decode(m["media"]["payload"])) == FRAME_BYTES for m in media)
    assert elapsed >= 0.02 * (len(media) - 1)  # real time: never faster than one frame a tick

    assert [m["dtmf"]["digit"] for m in fake.events("dtmf")] == ["1", "2"]
    assert kinds.index("dtmf") > kinds.index("mark")  # pressed after the greeting played
    assert fake.echoed == ["greeting", "reply-1", "reply-2"]

    with wave.open(str(out), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == FRAME_BYTES * len(media)  # one played frame per tick


def test_a_call_with_a_duration_starts_no_turn_after_it() -> None:
    fake = FakeAppliance()
    script = tuple(utterance(f"line {i}") for i in range(50))
    # A turn takes over 0.5 s of call time (0.2 s said, 0.2 s to the end of turn, a 0.3 s
    # reply, 0.3 s quiet after it): 50 never fit in 1.5 s.
    report = asyncio.run(call(fake, utterances=script, stop_after_s=1.5))

    assert report.ok, report
    assert 1 <= len(report.turns) < len(script)
    assert [t.said for t in report.turns] == [f"line {i}" for i in range(len(report.turns))]
    said = [t for t in fake.turns if t["role"] == "user"]
    assert len(said) == len(report.turns) and all(t.answered for t in report.turns)
    nothing = asyncio.run(call(FakeAppliance(), utterances=script, stop_after_s=0.0))
    assert nothing.ok and nothing.turns == []


def test_barge_in_gets_a_clear_and_pending_marks_back() -> None:
    fake = FakeAppliance(reply_s=0.8)
    script = (utterance("one"), utterance("two"))
    report = asyncio.run(call(fake, utterances=script, interrupt_after_s=0.1))

    assert report.ok, report
    first, second = report.turns
    assert not first.clear_received and second.clear_received
    assert first.interrupted and first.heard == "partial"
    # The fake clears after 3 voiced caller frames: the reply stopped no sooner, and well before
    # its 0.8 s were over. The last reply was not talked over.
    assert first.barge_in_s is not None and 0.06 <= first.barge_in_s < 0.8
    assert second.barge_in_s is None
    assert fake.echoed == ["greeting", "reply-1", "reply-2"]
    echoed_at = next(at for at, m in fake.messages if m.get("mark", {}).get("name") == "reply-1")
    # Its audio was dropped, not played: the mark came back on the clear, before the next reply.
    assert fake.cleared_at <= echoed_at < fake.said_at["reply-2"]


def test_barge_in_cuts_the_answer_not_the_hold_phrase() -> None:
    fake = FakeAppliance(reply_s=0.8, hold_s=0.6)
    script = (utterance("one"), utterance("two"))
    report = asyncio.run(call(fake, utterances=script, interrupt_after_s=0.1))

    assert report.ok, report
    assert report.turns[1].clear_received and report.turns[0].interrupted
    spoke_again = next(at for at in fake.voiced_at if at > fake.said_at["hold-1"])
    assert spoke_again > fake.said_at["reply-1"]  # waited through "one moment" for the answer


def test_busy_answer_is_reported_not_connected() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        twiml = "<Response><Say>All lines are busy.</Say><Hangup/></Response>"
        return httpx.Response(200, text=twiml)

    async def go() -> CallReport:
        async with httpx.AsyncClient(transport=httpx.MockTransport(busy)) as http:
            return await run_call(CallOptions(utterances=(utterance("hi"),)), http)

    report = asyncio.run(go())
    assert report.rejected == "<Say> All lines are busy.; <Hangup>"
    assert not report.ok


def test_wrong_auth_token_fails_cleanly() -> None:
    with pytest.raises(CallFailed, match="refused the signature"):
        asyncio.run(call(FakeAppliance(), auth_token="wrong"))


def test_media_socket_signature_refusal_fails_cleanly() -> None:
    with pytest.raises(CallFailed, match="media socket .* refused: HTTP 403"):
        asyncio.run(call(FakeAppliance(ws_token="another"), utterances=(utterance("hi"),)))


def test_server_hang_up_ends_the_call_unanswered() -> None:
    fake = FakeAppliance(hang_up_after_greeting=True)
    report = asyncio.run(call(fake, utterances=(utterance("hi"),)))
    assert report.ended_by_server and not report.ok
    assert report.turns[0].v2v_s is None


def test_wav_of_any_rate_and_channels_becomes_8k_frames(tmp_path) -> None:
    path = tmp_path / "stereo.wav"
    t = np.arange(44100 // 2) / 44100
    left = (np.sin(2 * np.pi * 300 * t) * 10000).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(44100)
        wav.writeframes(np.stack([left, left], axis=1).tobytes())
    spoken = from_wav(path)
    assert len(spoken.frames) == 25 and spoken.last_voiced >= 23
