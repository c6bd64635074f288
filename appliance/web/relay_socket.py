"""Twilio ConversationRelay over a WebSocket: a receive loop and one sender around a session."""

from __future__ import annotations

import asyncio
import logging

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from appliance.core.relay_session import RelaySession
from appliance.telephony import twilio_relay as tr
from appliance.web.flood import FloodGuard
from appliance.web.runtime import Runtime

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_S = 50  # Twilio sends a few per second; a flood beyond this is dropped
MAX_BAD_MESSAGES = 50  # a session that is mostly garbage is closed (each one is logged)
DTMF_KEYS = frozenset("0123456789*#ABCDabcd")
NEEDS_SETUP = (tr.Prompt, tr.Interrupt, tr.Dtmf)


class SocketRelayTransport:
    """RelayTransport over one socket: messages go through one queue and one sender task, so a
    reply and a hand-off never interleave writes."""

    def __init__(self, socket: WebSocket) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._socket.send_text((await self._queue.get()).decode())
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            log.info("relay socket: send stopped: %s", err or type(err).__name__)

    async def send_text(self, token: str, last: bool) -> None:
        self._queue.put_nowait(tr.encode(tr.Text(token=token, last=last)))

    async def end(self, handoff_data: str) -> None:
        self._queue.put_nowait(tr.encode(tr.End(handoff_data=handoff_data)))


async def handle_relay_socket(socket: WebSocket, runtime: Runtime) -> None:
    """Run one relay session until Twilio closes the socket or an error; always close the call."""
    transport = SocketRelayTransport(socket)
    session: RelaySession | None = None
    reason, status = "socket closed", "completed"
    flood, bad = FloodGuard(MAX_MESSAGES_PER_S, "relay"), 0
    try:
        async for frame in socket.iter_data("text"):
            if not flood.allow():
                continue
            try:
                message = tr.decode(frame)
                if isinstance(message, tr.Setup):
                    if session is not None:
                        raise tr.ProtocolError("duplicate setup")
                    session = await _setup(runtime, message, transport)
                elif isinstance(message, NEEDS_SETUP) and session is None:
                    raise tr.ProtocolError(f"{type(message).__name__.lower()} before setup")
                else:
                    _dispatch(session, message)
            except tr.ProtocolError as err:
                bad += 1
                log.warning("relay socket: refused message (%d so far): %s", bad, err)
                if bad >= MAX_BAD_MESSAGES:
                    reason, status = "too many bad messages", "failed"
                    break
    except WebSocketDisconnect:
        reason = "socket closed"
    except Exception as err:
        log.exception("relay socket failed")
        reason, status = f"error: {type(err).__name__}: {err}", "failed"
    finally:
        if session is not None:
            await session.close(reason, status=status)
            runtime.calls.release(session.call_sid)
        transport.sender.cancel()


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


async def _setup(runtime: Runtime, message: tr.Setup,
                 transport: SocketRelayTransport) -> RelaySession:
    call_sid = message.call_sid or message.custom_parameters.get("callSid", "")
    if not call_sid:
        raise tr.ProtocolError("setup without callSid")
    if runtime.engines is None:
        raise tr.ProtocolError("setup before the models are ready")
    runtime.calls.activate(call_sid)
    await runtime.store.update_call(call_sid, stream_sid=message.session_id,
                                    status="in-progress", mode="conversation-relay")
    session = RelaySession(call_sid, runtime.settings, runtime.engines.agent, runtime.store,
                           transport)
    await session.start()
    log.info("call %s: relay session %s started", call_sid, message.session_id)
    return session
