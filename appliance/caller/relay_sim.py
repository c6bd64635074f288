"""A simulated ConversationRelay call: signed webhook, then the relay socket, text both ways.

It plays Twilio's part on the wire (form fields, ``X-Twilio-Signature`` on the webhook, the
socket and the action callback; ``setup`` then one final ``prompt`` per utterance) and times
each reply: prompt sent → first ``text`` token, and → ``last: true``. Between turns it waits as
long as Twilio would take to speak the reply, so a hand-off's ``end`` arrives as it would live.

``RelaySocket`` is the wire-level piece the tests drive directly; ``run_relay_call`` is the
scripted caller behind ``appliance relay-call``.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from appliance.caller.report import CallFailed, fetch_record, new_sid, rounded, server_target
from appliance.caller.twilio_wire import (
    VOICE_PATH,
    Rejected,
    RelayTarget,
    describe,
    open_socket,
    parse_twiml,
    ringing_form,
    signed_post,
)
from appliance.config import Settings
from appliance.telephony import twilio_relay as tr

KEYS_REPLY_WAIT_S = 2.0  # keys need not be answered: wait this long for a reply to them
TokenSink = Callable[["RelayTurnReport", str], None]  # each token, then "" when the reply ends


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """Everything one simulated relay call needs."""

    base_url: str = "http://127.0.0.1:8080"  # where the server really listens
    public_base_url: str = "http://127.0.0.1:8080"  # what Twilio would call: the signed URL
    auth_token: str = ""
    account_sid: str = ""  # random "AC…" when empty
    api_token: str = ""  # bearer token for the call's record at /api/calls
    prompts: tuple[str, ...] = ()
    dtmf: str = ""  # keys pressed before the first prompt
    caller: str = "+15555550100"
    callee: str = "+15555550199"
    language: str = "en-US"
    turn_timeout_s: float = 30.0
    words_per_s: float = 2.5  # how fast Twilio's voice reads a reply to the caller
    connect_timeout_s: float = 10.0
    fetch_record: bool = True
    record_settle_s: float = 0.3

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RelayOptions:
        values = server_target(settings) | {"language": settings.language}
        return cls(**(values | overrides))


@dataclass(slots=True)
class RelayTurnReport:
    said: str
    reply: str = ""
    first_token_s: float | None = None  # prompt sent → first text token received
    reply_s: float | None = None  # prompt sent → `last: true`
    timed_out: bool = False


@dataclass(slots=True)
class RelayReport:
    call_sid: str
    session_id: str = ""
    rejected: str | None = None  # the TwiML verbs, when the server did not connect the relay
    greeting: str | None = None  # welcomeGreeting: Twilio speaks it, not the app
    turns: list[RelayTurnReport] = field(default_factory=list)
    handoff: str | None = None  # the `end` message's handoffData
    after: str | None = None  # what the action route told Twilio to do next
    server: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.rejected is None and all(t.reply for t in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid, "session_id": self.session_id, "ok": self.ok,
            "rejected": self.rejected, "greeting": self.greeting,
            "turns": [{"said": t.said, "reply": t.reply, "first_token_s": rounded(t.first_token_s),
                       "reply_s": rounded(t.reply_s), "timed_out": t.timed_out}
                      for t in self.turns],
            "handoff": self.handoff, "after": self.after, "server": self.server,
        }


class RelaySocket:
    """Twilio's side of one relay socket: sends its messages, queues what the app sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[tr.OutboundMessage] = []
        self._inbox: asyncio.Queue[tr.OutboundMessage | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, url: str, auth_token: str,
                   timeout_s: float = 10.0) -> RelaySocket:
        """Connect to ``url``'s path on ``base_url``, signed over ``url`` as Twilio signs it."""
        return cls(await open_socket(base_url, url, auth_token, what="relay socket",
                                     timeout_s=timeout_s))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = tr.decode_outbound(frame)
                self.received.append(message)
                self._inbox.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self._inbox.put_nowait(None)

    async def send(self, message: tr.InboundMessage) -> None:
        await self.ws.send(tr.encode(message).decode())

    async def next(self, timeout_s: float) -> tr.OutboundMessage | None:
        """The app's next message; None when the socket closed. TimeoutError if none came."""
        message = await asyncio.wait_for(self._inbox.get(), timeout_s)
        if message is None:
            self._inbox.put_nowait(None)  # stay closed for later readers
        return message

    async def reply(self, report: RelayTurnReport, sent_at: float, timeout_s: float,
                    on_token: TokenSink | None = None) -> tr.End | None:
        """Read one streamed reply into ``report``; returns the `end` if one came instead."""
        deadline = sent_at + timeout_s
        while True:
            try:
                message = await self.next(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                report.timed_out = True
                return None
            if message is None or isinstance(message, tr.End):
                return message
            if message.token:
                report.first_token_s = report.first_token_s or time.monotonic() - sent_at
                report.reply += message.token
                if on_token is not None:
                    on_token(report, message.token)
            if message.last:
                report.reply_s = time.monotonic() - sent_at
                report.reply = report.reply.strip()
                return None

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def _post(http: httpx.AsyncClient, opts: RelayOptions, url: str,
                form: dict[str, str]) -> str:
    return await signed_post(http, opts.base_url, opts.public_base_url, opts.auth_token, url, form)


async def run_relay_call(opts: RelayOptions, on_token: TokenSink | None = None,
                         http: httpx.AsyncClient | None = None) -> RelayReport:
    """Place one simulated relay call and report it; raises CallFailed on faults."""
    if http is None:
        async with httpx.AsyncClient(timeout=opts.connect_timeout_s, trust_env=False) as own:
            return await run_relay_call(opts, on_token, own)
    account_sid = opts.account_sid or new_sid("AC")
    report = RelayReport(call_sid=new_sid("CA"), session_id=new_sid("VX"))
    form = ringing_form(report.call_sid, account_sid, opts.caller, opts.callee)
    voice_url = opts.public_base_url.rstrip("/") + VOICE_PATH
    try:
        target = parse_twiml(await _post(http, opts, voice_url, form))
    except Rejected as rejected:
        report.rejected = str(rejected)
        return report
    if not isinstance(target, RelayTarget):
        raise CallFailed("server answered <Stream> (media-streams mode); use `appliance call`")
    report.greeting = target.greeting
    socket = await RelaySocket.open(opts.base_url, target.url, opts.auth_token,
                                    opts.connect_timeout_s)
    started = time.monotonic()
    try:
        end = await _script(socket, opts, report, account_sid, target, on_token)
    finally:
        await socket.close()
    if end is not None:
        report.handoff = end.handoff_data
        if target.action:
            after = await _post(http, opts, target.action, {
                "AccountSid": account_sid, "CallSid": report.call_sid,
                "SessionId": report.session_id, "SessionStatus": "ended",
                "SessionDuration": str(round(time.monotonic() - started)),
                "HandoffData": end.handoff_data})
            report.after = describe(ET.fromstring(after))
    if opts.fetch_record:
        await asyncio.sleep(opts.record_settle_s)
        report.server = await fetch_record(http, opts.base_url, report.call_sid, opts.api_token)
    return report


async def _script(socket: RelaySocket, opts: RelayOptions, report: RelayReport,
                  account_sid: str, target: RelayTarget,
                  on_token: TokenSink | None) -> tr.End | None:
    """setup, the keys, then one prompt per utterance, listening to each reply in full."""
    await socket.send(tr.Setup(
        session_id=report.session_id, account_sid=account_sid, call_sid=report.call_sid,
        from_=opts.caller, to=opts.callee, direction="inbound", call_type="PSTN",
        call_status="RINGING", custom_parameters=target.parameters))
    await _listen(socket, opts, target.greeting)
    for digit in opts.dtmf:
        await socket.send(tr.Dtmf(digit=digit))
    if opts.dtmf:
        keys = RelayTurnReport(said="")
        if end := await _hear_reply(socket, opts, keys, KEYS_REPLY_WAIT_S, on_token):
            return end
    for said in opts.prompts:
        turn = RelayTurnReport(said=said)
        report.turns.append(turn)
        await socket.send(tr.Prompt(voice_prompt=said, lang=opts.language, last=True))
        if end := await _hear_reply(socket, opts, turn, opts.turn_timeout_s, on_token):
            return end
    return None


async def _hear_reply(socket: RelaySocket, opts: RelayOptions, turn: RelayTurnReport,
                      timeout_s: float, on_token: TokenSink | None) -> tr.End | None:
    """Read the streamed reply to what was just sent, then let Twilio speak it."""
    end = await socket.reply(turn, time.monotonic(), timeout_s, on_token)
    if on_token is not None and turn.reply:
        on_token(turn, "")
    return end or await _listen(socket, opts, turn.reply)


async def _listen(socket: RelaySocket, opts: RelayOptions, spoken: str) -> tr.End | None:
    """Wait while Twilio would speak ``spoken``; an `end` may come meanwhile."""
    until = time.monotonic() + len(spoken.split()) / opts.words_per_s + 0.5
    while (left := until - time.monotonic()) > 0:
        try:
            message = await socket.next(left)
        except TimeoutError:
            return None
        if message is None or isinstance(message, tr.End):
            return message
    return None
