"""Twilio Media Streams over a WebSocket: a receive loop and a send loop around a CallSession."""

from __future__ import annotations

import asyncio
import logging

from litestar import WebSocket

from appliance.core.session import CallSession
from appliance.telephony import twilio_media as tm
from appliance.telephony.twilio_calls import TwilioCalls
from appliance.web.runtime import Runtime
from appliance.web.socket_loop import run_socket

log = logging.getLogger(__name__)

MAX_FRAMES_PER_S = 150  # Twilio sends 50; a flood beyond this is dropped, not processed
MAX_BAD_FRAMES = 500  # a stream that is mostly garbage is closed


class MediaTransport:
    """CallTransport over one Twilio media socket. Outbound messages go through one queue and one
    sender task, so concurrent stages never interleave writes and a clear can drop what is
    queued."""

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


class MediaFrames:
    """The Media Streams side of :func:`run_socket`: start, media, mark, dtmf, stop."""

    def __init__(self, socket: WebSocket, runtime: Runtime) -> None:
        self.socket = socket
        self.runtime = runtime
        self.session: CallSession | None = None
        self.transport: MediaTransport | None = None

    async def handle(self, frame: str) -> str | None:
        message = tm.decode(frame)
        if isinstance(message, tm.Media):
            if self.session is None:
                raise tm.ProtocolError("media before start")
            self.session.on_audio(tm.media_audio(message))
        elif isinstance(message, tm.Start):
            if self.session is not None:
                raise tm.ProtocolError("duplicate start")
            self.session = await self._start(message)
        elif isinstance(message, tm.Mark) and self.session is not None:
            self.session.on_mark(message.mark.name)
        elif isinstance(message, tm.Dtmf) and self.session is not None:
            self.session.on_dtmf(message.dtmf.digit)
        elif isinstance(message, tm.Stop):
            return "stop received"
        return None

    async def _start(self, message: tm.Start) -> CallSession:
        info = message.start
        call_sid = info.call_sid or info.custom_parameters.get("callSid", "")
        if not call_sid or not info.stream_sid:
            raise tm.ProtocolError("start without callSid/streamSid")
        if info.media_format.encoding != "audio/x-mulaw" or info.media_format.sample_rate != 8000:
            raise tm.ProtocolError(f"unsupported media format {info.media_format}")
        if self.runtime.engines is None:
            raise tm.ProtocolError("start before the models are ready")
        self.transport = MediaTransport(self.socket, info.stream_sid, call_sid,
                                        self.runtime.twilio)
        self.runtime.calls.activate(call_sid)
        await self.runtime.store.update_call(call_sid, stream_sid=info.stream_sid,
                                             status="in-progress", mode="media-streams")
        session = CallSession(call_sid, self.runtime.settings, self.runtime.engines,
                              self.runtime.store, self.transport)
        await session.start()
        self.runtime.sessions[call_sid] = session  # the console's live page reads it
        log.info("call %s: media stream %s started", call_sid, info.stream_sid)
        return session

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.sender.cancel()


async def handle_media_socket(socket: WebSocket, runtime: Runtime) -> None:
    """Run one media stream until `stop`, a socket close or an error; always close the call."""
    await run_socket(socket, runtime, MediaFrames(socket, runtime), what="media", noun="frame",
                     max_per_s=MAX_FRAMES_PER_S, max_bad=MAX_BAD_FRAMES, log_bad_every=100)
