"""Twilio ConversationRelay over a WebSocket: a receive loop and one sender around a session."""

from __future__ import annotations

import asyncio
import logging

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from appliance.core.agent import Tool
from appliance.core.clock import MONOTONIC
from appliance.core.relay_session import RelaySession
from appliance.logs import CALL_SID
from appliance.telephony import twilio_relay as tr
from appliance.telephony.sids import is_call_sid
from appliance.web.deadlines import SocketDeadlines
from appliance.web.runtime import TICKET_PARAMETER, Runtime
from appliance.web.socket_loop import SocketRefused, run_socket, start_admitted

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_S = 50  # Twilio sends a few per second; a flood beyond this is dropped
MAX_BAD_MESSAGES = 50  # a session that is mostly garbage is closed (each one is logged)
OUTBOX_MESSAGES = 1000  # text tokens not yet written; only fills when the peer stopped reading
DTMF_KEYS = frozenset("0123456789*#ABCDabcd")
NEEDS_SETUP = (tr.Prompt, tr.Interrupt, tr.Dtmf)


class SocketRelayTransport:
    """RelayTransport over one socket: messages go through one queue and one sender task, so a
    reply and a hand-off never interleave writes."""

    def __init__(self, socket: WebSocket) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=OUTBOX_MESSAGES)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._socket.send_text((await self._queue.get()).decode())
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            log.info("relay socket: send stopped: %s", err or type(err).__name__)

    def _put(self, message: bytes) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            if not self.ended.done():
                self.ended.set_result(f"peer stopped reading ({OUTBOX_MESSAGES} messages unsent)")

    async def send_text(self, token: str, last: bool) -> None:
        self._put(tr.encode(tr.Text(token=token, last=last)))

    async def end(self, tool: Tool, call_sid: str) -> None:
        self._put(tr.encode(tr.End(handoff_data=tr.handoff_data(tool.value, call_sid))))


class RelayFrames:
    """The ConversationRelay side of :func:`run_socket`: setup, then prompts and the rest."""

    def __init__(self, runtime: Runtime, transport: SocketRelayTransport) -> None:
        self.runtime = runtime
        self.transport = transport
        self.session: RelaySession | None = None
        self.ended = transport.ended
        self.deadlines = SocketDeadlines(MONOTONIC, start_s=runtime.settings.start_timeout_s,
                                         max_call_s=runtime.settings.max_call_s, media_s=None)

    async def handle(self, frame: str) -> str | None:
        message = tr.decode(frame)
        if isinstance(message, tr.Setup):
            if self.session is not None:
                raise tr.ProtocolError("duplicate setup")
            self.session = await self._setup(message)
        elif isinstance(message, NEEDS_SETUP) and self.session is None:
            raise tr.ProtocolError(f"{type(message).__name__.lower()} before setup")
        else:
            _dispatch(self.session, message)
        return None

    async def _setup(self, message: tr.Setup) -> RelaySession:
        call_sid = message.call_sid or message.custom_parameters.get("callSid", "")
        if not call_sid:
            raise tr.ProtocolError("setup without callSid")
        if not is_call_sid(call_sid):
            raise SocketRefused("bad-sid", f"callSid {call_sid[:40]!r}")
        CALL_SID.set(call_sid)  # this socket's log lines, and its session's tasks', carry it
        engines = self.runtime.engines
        assert engines is not None  # the route refused the socket before the models were ready

        async def start() -> RelaySession:
            await self.runtime.store.update_call(call_sid, stream_sid=message.session_id,
                                                 status="in-progress", mode="conversation-relay")
            session = RelaySession(call_sid, self.runtime.settings, engines.agent,
                                   self.runtime.store, self.transport, live=self.runtime.live)
            await session.start()
            return session

        ticket = message.custom_parameters.get(TICKET_PARAMETER, "")
        session = await start_admitted(self.runtime, call_sid, ticket, start)
        self.runtime.sessions[call_sid] = session  # the console's operator buttons use it
        self.deadlines.on_start()
        log.info("call %s: relay session %s started", call_sid, message.session_id)
        return session

    def stop(self) -> None:
        self.transport.sender.cancel()


async def handle_relay_socket(socket: WebSocket, runtime: Runtime) -> None:
    """Run one relay session until Twilio closes the socket or an error; always close the call."""
    frames = RelayFrames(runtime, SocketRelayTransport(socket))
    await run_socket(socket, runtime, frames, what="relay", noun="message",
                     max_per_s=MAX_MESSAGES_PER_S, max_bad=MAX_BAD_MESSAGES)


def _dispatch(session: RelaySession | None, message: tr.InboundMessage) -> None:
    """Hand one decoded message to the session (only error and info may come before setup)."""
    if isinstance(message, tr.Error):
        if session is None:
            log.warning("relay: Twilio reported an error before setup: %s", message.description)
        else:
            session.on_error(message.description)
    elif isinstance(message, tr.Info):
        log.debug("relay info %s=%r", message.name, message.value)
    elif session is None:
        return
    elif isinstance(message, tr.Prompt):
        session.on_prompt(message.voice_prompt, last=message.last)
    elif isinstance(message, tr.Interrupt):
        session.on_interrupt(message.utterance_until_interrupt,
                             message.duration_until_interrupt_ms)
    elif isinstance(message, tr.Dtmf):
        if len(message.digit) != 1 or message.digit not in DTMF_KEYS:
            raise tr.ProtocolError(f"bad DTMF digit {message.digit[:8]!r}")
        session.on_dtmf(message.digit)
