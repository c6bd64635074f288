"""Twilio Media Streams over a WebSocket: a receive loop and a send loop around a CallSession."""

from __future__ import annotations

import asyncio
import logging

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from appliance.core.session import CallSession
from appliance.telephony import twilio_media as tm
from appliance.telephony.twilio_calls import TwilioCalls
from appliance.web.flood import FloodGuard
from appliance.web.runtime import Runtime

log = logging.getLogger(__name__)

MAX_FRAMES_PER_S = 150  # Twilio sends 50; a flood beyond this is dropped, not processed
MAX_BAD_FRAMES = 500  # a stream that is mostly garbage is closed


class MediaTransport:
    """CallTransport over one Twilio media socket. Outbound messages go through one queue and one
    sender task, so concurrent stages never interleave writes and a clear can drop what is queued."""

    def __init__(self, socket: WebSocket, stream_sid: str, call_sid: str,
                 calls: TwilioCalls) -> None:
        self._socket = socket
        self._stream_sid = stream_sid
        self._call_sid = call_sid
        self._calls = calls
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        while (message := await self._queue.get()) is not None:
            await self._socket.send_text(message.decode())

    async def send_audio(self, ulaw: bytes) -> None:
        self._queue.put_nowait(tm.media_message(self._stream_sid, ulaw))

    async def send_mark(self, name: str) -> None:
        self._queue.put_nowait(tm.mark_message(self._stream_sid, name))

    async def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(tm.clear_message(self._stream_sid))

    async def hang_up(self) -> None:
        """End the call over REST when we can; else (or if REST fails) close the stream, and
        Twilio moves past <Connect> to the end of the TwiML, which hangs up."""
        if self._calls.available:
            try:
                await self._calls.hang_up(self._call_sid)
                return
            except Exception as err:
                log.warning("call %s: REST hang-up failed (%s); closing the stream", self._call_sid,
                            err)
        await self.close()

    async def transfer(self, number: str) -> None:
        await self._calls.transfer(self._call_sid, number)

    async def close(self) -> None:
        """Flush what is queued, then close the socket: Twilio moves on to the next TwiML verb."""
        self._queue.put_nowait(None)
        await asyncio.wait_for(asyncio.shield(self.sender), 5)
        await self._socket.close()


async def handle_media_socket(socket: WebSocket, runtime: Runtime) -> None:
    """Run one media stream until `stop`, a socket close or an error; always close the call."""
    session: CallSession | None = None
    transport: MediaTransport | None = None
    reason, status = "socket closed", "completed"
    flood, bad = FloodGuard(MAX_FRAMES_PER_S, "media"), 0
    try:
        async for frame in socket.iter_data("text"):
            if not flood.allow():
                continue
            try:
                message = tm.decode(frame)
                if isinstance(message, tm.Media):
                    if session is None:
                        raise tm.ProtocolError("media before start")
                    session.on_audio(tm.media_audio(message))
                elif isinstance(message, tm.Start):
                    if session is not None:
                        raise tm.ProtocolError("duplicate start")
                    session, transport = await _start(socket, runtime, message)
                elif isinstance(message, tm.Mark) and session is not None:
                    session.on_mark(message.mark.name)
                elif isinstance(message, tm.Dtmf) and session is not None:
                    session.on_dtmf(message.dtmf.digit)
                elif isinstance(message, tm.Stop):
                    reason = "stop received"
                    break
            except tm.ProtocolError as err:
                bad += 1
                if bad <= 5 or bad % 100 == 0:
                    log.warning("media socket: refused frame (%d so far): %s", bad, err)
                if bad >= MAX_BAD_FRAMES:
                    reason, status = "too many bad frames", "failed"
                    break
    except WebSocketDisconnect:
        reason = "socket closed"
    except Exception as err:
        log.exception("media socket failed")
        reason, status = f"error: {type(err).__name__}: {err}", "failed"
    finally:
        if session is not None:
            await session.close(reason, status=status)
            runtime.calls.release(session.call_sid)
            runtime.sessions.pop(session.call_sid, None)
        if transport is not None:
            transport.sender.cancel()


async def _start(socket: WebSocket, runtime: Runtime,
                 message: tm.Start) -> tuple[CallSession, MediaTransport]:
    info = message.start
    call_sid = info.call_sid or info.custom_parameters.get("callSid", "")
    if not call_sid or not info.stream_sid:
        raise tm.ProtocolError("start without callSid/streamSid")
    if info.media_format.encoding != "audio/x-mulaw" or info.media_format.sample_rate != 8000:
        raise tm.ProtocolError(f"unsupported media format {info.media_format}")
    transport = MediaTransport(socket, info.stream_sid, call_sid, runtime.twilio)
    runtime.calls.activate(call_sid)
    await runtime.store.update_call(call_sid, stream_sid=info.stream_sid, status="in-progress",
                                    mode="media-streams")
    session = CallSession(call_sid, runtime.settings, runtime.engines, runtime.store, transport)
    await session.start()
    runtime.sessions[call_sid] = session
    log.info("call %s: media stream %s started", call_sid, info.stream_sid)
    return session, transport
