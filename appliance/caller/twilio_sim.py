"""A simulated Twilio call against a running appliance: signed webhook, then a Media Streams socket.

It behaves the way Twilio does on the wire (form fields, ``X-Twilio-Signature``, message shapes,
one inbound frame every 20 ms for the whole call, playout with marks and ``clear``) so the
server cannot tell it from the real thing. A scripted caller rides on top: wait for the greeting,
speak each utterance, wait for the reply (or barge in), and time voice to voice.

``run_call`` takes plain options and returns a report, so the CLI, the end-to-end tests and the
benchmark (many concurrent callers in one event loop) all drive calls the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from appliance.caller.audio_source import Utterance
from appliance.caller.playback import FRAME_S, Playback
from appliance.caller.report import (
    CallFailed,
    CallOptions,
    CallReport,
    TurnReport,
    apply_record,
    fetch_record,
    new_sid,
)
from appliance.caller.twilio_wire import (
    VOICE_PATH,
    Rejected,
    StreamTarget,
    open_socket,
    parse_twiml,
    ringing_form,
    signed_post,
)
from appliance.core.audio import FRAME_BYTES, ULAW_SILENCE, frames, is_voiced
from appliance.core.playout import HOLD_MARK_PREFIX

logger = logging.getLogger(__name__)

SILENCE = bytes([ULAW_SILENCE]) * FRAME_BYTES
POLICY_VIOLATION = 1008  # how the server refuses a badly signed media socket
DTMF_GAP_TICKS = 5  # 100 ms between key presses


class _ServerHungUp(Exception):
    """The server closed the media socket mid-script."""


async def _answer(http: httpx.AsyncClient, opts: CallOptions, form: dict[str, str]) -> StreamTarget:
    """POST the signed voice webhook, as Twilio does when the call rings."""
    target = parse_twiml(await signed_post(http, opts.base_url, opts.public_base_url,
                                           opts.auth_token,
                                           opts.public_base_url.rstrip("/") + VOICE_PATH, form))
    if not isinstance(target, StreamTarget):
        raise CallFailed("server answered <ConversationRelay>; this caller speaks Media Streams")
    return target


@dataclass(slots=True)
class _Turn:
    """Script-side state of one caller turn."""

    utterance: Utterance
    report: TurnReport
    sent_at: float | None = None  # monotonic time the last voiced frame went out
    boundary: int = 0  # playback offset: server audio from here on is this turn's reply
    played_tick: int | None = None
    barged: bool = False  # the caller went on to talk over this turn's reply while it played
    # Where the answer itself starts, past any "one moment, please", and when it began to play:
    # a caller barging in means to cut the answer, not the hold phrase.
    answer_boundary: int = 0
    answer_tick: int | None = None


class _Stream:
    """One open media socket: the 20 ms clock, playout, and the caller's script."""

    def __init__(
        self, ws: ClientConnection, opts: CallOptions, report: CallReport, account_sid: str
    ) -> None:
        self.ws, self.opts, self.report = ws, opts, report
        self.account_sid = account_sid
        self.playback = Playback()
        self.turns = [_Turn(u, TurnReport(u.label)) for u in opts.utterances]
        report.turns = [t.report for t in self.turns]
        self.current: _Turn | None = None  # the latest turn the caller started speaking
        self.awaiting: _Turn | None = None  # spoken, no voiced reply received yet
        self.sequence = 0
        self.tick_count = 0
        self.quiet_ticks = 0  # unvoiced frames played since the last voiced one
        self.voiced_tick = -1  # the last tick that played a voiced frame
        self.greeting_played = False
        self.started_at = 0.0
        self.last_mark = ""  # the last mark echoed: what the caller has just finished hearing

    async def _send(self, event: str, body: dict[str, Any]) -> None:
        self.sequence += 1
        head = {"event": event, "sequenceNumber": str(self.sequence)}
        await self.ws.send(json.dumps(head | {"streamSid": self.report.stream_sid} | body))

    async def open(self, parameters: dict[str, str]) -> None:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        await self.ws.send(json.dumps(connected))
        await self._send("start", {"start": {
            "streamSid": self.report.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.report.call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }})
        self.started_at = time.monotonic()

    async def hang_up(self) -> None:
        stop = {"accountSid": self.account_sid, "callSid": self.report.call_sid}
        await self._send("stop", {"stop": stop})
        await self.ws.close()

    # -- what the server sends ------------------------------------------------------------

    async def receive(self) -> None:
        """Feed server messages into playout until the socket closes."""
        try:
            async for raw in self.ws:
                await self._on_message(raw)
        except ConnectionClosed:
            pass
        _check_refused(self.ws)

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            event = message["event"]
        except (ValueError, TypeError, KeyError) as err:
            raise CallFailed(f"server sent non-Twilio JSON: {raw[:120]!r}") from err
        if event not in ("media", "mark", "clear"):
            logger.debug("ignoring %s message from the server", event)
            return
        if message.get("streamSid") != self.report.stream_sid:
            raise CallFailed(f"server sent {event} for streamSid {message.get('streamSid')!r}")
        try:
            if event == "media":
                self._on_audio(base64.b64decode(message["media"]["payload"], validate=True))
            elif event == "mark":
                name = str(message["mark"]["name"])
                self.playback.mark(name)
                if name.startswith(HOLD_MARK_PREFIX) and self.current is not None:
                    self.current.answer_boundary = self.playback.received
                    self.current.answer_tick = None  # what played so far was the hold phrase
            else:
                if self.current is not None:
                    self.current.report.clear_received = True
                for name in self.playback.clear():
                    await self._echo_mark(name)
        except (KeyError, TypeError, binascii.Error) as err:
            raise CallFailed(f"malformed {event} message from the server: {raw[:120]!r}") from err

    def _on_audio(self, audio: bytes) -> None:
        now = time.monotonic()
        self.playback.append(audio)
        if not any(is_voiced(frame) for frame in frames(audio)):
            return
        if self.report.greeting_s is None and self.current is None:
            self.report.greeting_s = now - self.started_at
        turn = self.awaiting
        if turn is not None and turn.sent_at is not None:
            turn.report.v2v_s = now - turn.sent_at
            self.awaiting = None

    async def _echo_mark(self, name: str) -> None:
        self.last_mark = name
        await self._send("mark", {"mark": {"name": name}})

    # -- the 20 ms clock ------------------------------------------------------------------

    async def tick(self, receiver: asyncio.Task[None], frame: bytes = SILENCE) -> None:
        """One 20 ms step on an absolute schedule: play a frame to the caller, send one inbound."""
        delay = self.started_at + self.tick_count * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if receiver.done():
            receiver.result()  # re-raises the server's protocol fault, if that is why it ended
            raise _ServerHungUp
        played = self.playback.tick()
        self._observe(played.voiced, played.position)
        try:
            for name in played.marks:
                await self._echo_mark(name)
            await self._send("media", {"media": {
                "track": "inbound",
                "chunk": str(self.tick_count + 1),
                "timestamp": str(round(self.tick_count * FRAME_S * 1000)),
                "payload": base64.b64encode(frame).decode("ascii"),
            }})
        except ConnectionClosed as err:
            raise _ServerHungUp from err
        self.tick_count += 1

    def _observe(self, voiced: bool, position: int | None) -> None:
        """Track what the caller has heard: quiet time, greeting, start of the current reply."""
        if not voiced:
            self.quiet_ticks += 1
            return
        self.quiet_ticks = 0
        self.voiced_tick = self.tick_count
        turn = self.current
        if turn is None:
            self.greeting_played = True
        elif turn.sent_at is not None and position is not None:
            if turn.played_tick is None and position >= turn.boundary:
                turn.played_tick = self.tick_count
                turn.report.v2v_played_s = time.monotonic() - turn.sent_at
            if turn.answer_tick is None and position >= max(turn.boundary, turn.answer_boundary):
                turn.answer_tick = self.tick_count

    @property
    def elapsed_s(self) -> float:
        """Call time so far, on the 20 ms clock."""
        return self.tick_count * FRAME_S

    def quiet_for(self, seconds: float) -> bool:
        return self.playback.pending == 0 and self.quiet_ticks * FRAME_S >= seconds

    # -- the caller's script ----------------------------------------------------------------

    async def run_script(self, receiver: asyncio.Task[None]) -> None:
        opts = self.opts
        await self._listen(receiver, opts.turn_timeout_s,
                           lambda: self.greeting_played and self.quiet_for(opts.greeting_quiet_s))
        if opts.dtmf:
            for digit in opts.dtmf:
                await self._send("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})
                for _ in range(DTMF_GAP_TICKS):
                    await self.tick(receiver)
            self.quiet_ticks = 0
            await self._listen(
                receiver, opts.turn_timeout_s, lambda: self.quiet_for(opts.reply_quiet_s)
            )
        for index, turn in enumerate(self.turns):
            if opts.stop_after_s is not None and self.elapsed_s >= opts.stop_after_s:
                del self.turns[index:], self.report.turns[index:]
                break
            barge = opts.interrupt_after_s is not None and index + 1 < len(self.turns)
            await self._speak(receiver, turn)
            done = await self._listen(
                receiver, opts.turn_timeout_s, functools.partial(self._reply_over, turn, barge)
            )
            turn.report.timed_out = not done
            if self.awaiting is turn:
                self.awaiting = None

    async def _speak(self, receiver: asyncio.Task[None], turn: _Turn) -> None:
        over = self.current if self.current is not None and self.current.barged else None
        self.current = turn
        talking_from: int | None = None  # tick of the caller's first voiced frame
        for index, frame in enumerate(turn.utterance.frames):
            if talking_from is None and is_voiced(frame):
                talking_from = self.tick_count
            await self.tick(receiver, frame)
            if index == turn.utterance.last_voiced:
                turn.sent_at = time.monotonic()
                turn.boundary = self.playback.received
                self.awaiting = turn
        if over is not None and talking_from is not None:
            # No new reply can play before this utterance ends, so every voiced frame played
            # since the caller started talking was the old reply's. The whole utterance's
            # length means the server never stopped it.
            stopped = max(self.voiced_tick + 1, talking_from)
            over.report.barge_in_s = (stopped - talking_from) * FRAME_S

    async def _listen(
        self, receiver: asyncio.Task[None], timeout_s: float, done: Callable[[], bool]
    ) -> bool:
        """Send silence until ``done()``; False if ``timeout_s`` passed first."""
        for _ in range(round(timeout_s / FRAME_S)):
            await self.tick(receiver)
            if done():
                return True
        return False

    def _reply_over(self, turn: _Turn, barge: bool) -> bool:
        if turn.played_tick is None:
            return False
        if barge and self.opts.interrupt_after_s is not None and turn.answer_tick is not None:
            if (self.tick_count - turn.answer_tick) * FRAME_S >= self.opts.interrupt_after_s:
                turn.barged = self.playback.pending > 0 or self.quiet_ticks == 0  # still playing
                return True
        if self.last_mark.startswith(HOLD_MARK_PREFIX):
            return False  # "one moment, please": a person would keep waiting for the answer
        return self.quiet_for(self.opts.reply_quiet_s)


def _check_refused(ws: ClientConnection) -> None:
    """A policy-violation close is the server refusing the socket's signature: a failure."""
    if ws.close_code == POLICY_VIOLATION:
        reason = ws.close_reason or "no reason given"
        raise CallFailed(f"server refused the media socket (close 1008: {reason}); check signing")


async def _stream(
    opts: CallOptions, report: CallReport, target: StreamTarget, account_sid: str
) -> Playback:
    """Open the media socket, run the script, hang up; returns the playout with its timeline."""
    ws = await open_socket(opts.base_url, target.url, opts.auth_token, what="media socket",
                           timeout_s=opts.connect_timeout_s,
                           public_base_url=opts.public_base_url)
    call = _Stream(ws, opts, report, account_sid)
    receiver: asyncio.Task[None] | None = None
    try:
        await call.open(target.parameters)
        receiver = asyncio.create_task(call.receive())
        try:
            await call.run_script(receiver)
        except _ServerHungUp:
            report.ended_by_server = True
        else:
            await call.hang_up()
        if receiver.done():
            receiver.result()
    except ConnectionClosed:  # closed under ``open`` or ``hang_up``
        report.ended_by_server = True
        _check_refused(ws)
    finally:
        if receiver is not None:
            receiver.cancel()
            await asyncio.wait([receiver])
            if not receiver.cancelled():
                receiver.exception()  # already reported above, or superseded by another fault
        await ws.close()
    return call.playback


async def run_call(opts: CallOptions, http: httpx.AsyncClient | None = None) -> CallReport:
    """Place one simulated Twilio call and report what happened; raises CallFailed on faults.

    Pass ``http`` to share one connection pool between many concurrent calls.
    """
    if http is None:
        async with httpx.AsyncClient(timeout=opts.connect_timeout_s, trust_env=False) as own:
            return await run_call(opts, own)
    account_sid = opts.account_sid or new_sid("AC")
    report = CallReport(call_sid=new_sid("CA"))
    form = ringing_form(report.call_sid, account_sid, opts.caller, opts.callee)
    try:
        target = await _answer(http, opts, form)
    except Rejected as rejected:
        report.rejected = str(rejected)
        return report
    report.stream_sid = new_sid("MZ")
    playback = await _stream(opts, report, target, account_sid)
    if opts.out:
        playback.write_wav(opts.out)
        report.out = opts.out
    if opts.fetch_record:
        await asyncio.sleep(opts.record_settle_s)
        report.server = await fetch_record(http, opts.base_url, report.call_sid, opts.api_token)
        if report.server is not None:
            apply_record(report, report.server)
    return report
