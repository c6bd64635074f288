"""Twilio Media Streams over a WebSocket: a receive loop and a send loop around a CallSession."""

from __future__ import annotations

import asyncio
import logging

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from appliance.core.audio import TELEPHONE_RATE
from appliance.core.call_audio import CallTape
from appliance.core.clock import MONOTONIC
from appliance.core.session import CallSession
from appliance.logs import CALL_SID
from appliance.telephony import twilio_media as tm
from appliance.telephony.sids import is_call_sid, is_stream_sid
from appliance.telephony.twilio_calls import TwilioCalls
from appliance.web.deadlines import SocketDeadlines
from appliance.web.flood import AudioBudget
from appliance.web.runtime import TICKET_PARAMETER, Runtime
from appliance.web.socket_loop import SocketRefused, run_socket, start_admitted

log = logging.getLogger(__name__)

MAX_FRAMES_PER_S = 150  # Twilio sends 50; a flood beyond this is dropped, not processed
MAX_BAD_FRAMES = 500  # a stream that is mostly garbage is closed
# Outbound messages not yet written: 30 s of 20 ms frames. Replies are sent faster than real
# time and Twilio buffers them, so the queue only fills when the peer stopped reading.
OUTBOX_MESSAGES = 1500


class MediaTransport:
    """CallTransport over one Twilio media socket. Outbound messages go through one queue and one
    sender task, so concurrent stages never interleave writes and a clear can drop what is
    queued."""

    def __init__(self, socket: WebSocket, stream_sid: str, call_sid: str,
                 calls: TwilioCalls, ended: asyncio.Future[str]) -> None:
        self._socket = socket
        self._stream_sid = stream_sid
        self._call_sid = call_sid
        self._calls = calls
        self._ended = ended
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=OUTBOX_MESSAGES + 1)
        self.sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while (message := await self._queue.get()) is not None:
                await self._socket.send_text(message.decode())
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            _end(self._ended, f"send failed: {err or type(err).__name__}")

    def _put(self, message: bytes) -> None:
        if self._queue.qsize() >= OUTBOX_MESSAGES:
            _end(self._ended, f"peer stopped reading ({OUTBOX_MESSAGES} messages unsent)")
            return
        self._queue.put_nowait(message)

    async def send_audio(self, ulaw: bytes) -> None:
        self._put(tm.media_message(self._stream_sid, ulaw))

    async def send_mark(self, name: str) -> None:
        self._put(tm.mark_message(self._stream_sid, name))

    async def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._put(tm.clear_message(self._stream_sid))

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
        self._queue.put_nowait(None)  # the one place past the bound (maxsize leaves room)
        await asyncio.wait_for(asyncio.shield(self.sender), 5)
        await self._socket.close()


class MediaFrames:
    """The Media Streams side of :func:`run_socket`: start, media, mark, dtmf, stop."""

    def __init__(self, socket: WebSocket, runtime: Runtime) -> None:
        self.socket = socket
        self.runtime = runtime
        settings = runtime.settings
        self.session: CallSession | None = None
        self.transport: MediaTransport | None = None
        self.deadlines = SocketDeadlines(MONOTONIC, start_s=settings.start_timeout_s,
                                         max_call_s=settings.max_call_s,
                                         media_s=settings.media_timeout_s)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.budget = AudioBudget(settings.audio_burst_s, settings.audio_flood_close_s, "media")

    async def handle(self, frame: str) -> str | None:
        message = tm.decode(frame)
        if isinstance(message, tm.Media):
            if self.session is None:
                raise tm.ProtocolError("media before start")
            self._audio(tm.media_audio(message), tm.media_timestamp(message))
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

    def _audio(self, ulaw: bytes, timestamp_ms: int | None) -> None:
        """Audio within the real-time budget goes to the session; a flood is dropped, then
        ends the socket."""
        assert self.session is not None
        self.deadlines.on_media()
        if self.budget.admit(len(ulaw) / TELEPHONE_RATE):
            self.session.on_audio(ulaw, timestamp_ms)
        elif self.budget.exhausted:
            raise SocketRefused("audio-flood", f"{self.budget.dropped_s:.0f} s of audio over "
                                "the real-time budget")

    async def _start(self, message: tm.Start) -> CallSession:
        info = message.start
        call_sid = info.call_sid or info.custom_parameters.get("callSid", "")
        if not is_call_sid(call_sid) or not is_stream_sid(info.stream_sid):
            raise SocketRefused("bad-sid", f"callSid {call_sid[:40]!r}, "
                                f"streamSid {info.stream_sid[:40]!r}")
        if info.media_format.encoding != "audio/x-mulaw" or info.media_format.sample_rate != 8000:
            raise SocketRefused("bad-format", f"unsupported media format {info.media_format}")
        CALL_SID.set(call_sid)  # this socket's log lines, and its session's tasks', carry it
        engines = self.runtime.engines
        assert engines is not None  # the route refused the socket before the models were ready

        async def start() -> CallSession:
            self.transport = MediaTransport(self.socket, info.stream_sid, call_sid,
                                            self.runtime.twilio, self.ended)
            tape = self._tape(call_sid)
            recording = {"recording": self.runtime.recordings.relative(call_sid)} if tape else {}
            await self.runtime.store.update_call(call_sid, stream_sid=info.stream_sid,
                                                 status="in-progress", mode="media-streams",
                                                 **recording)
            session = CallSession(call_sid, self.runtime.settings, engines,
                                  self.runtime.store, self.transport, tape=tape,
                                  live=self.runtime.live)
            await session.start()
            return session

        ticket = info.custom_parameters.get(TICKET_PARAMETER, "")
        session = await start_admitted(self.runtime, call_sid, ticket, start)
        self.runtime.sessions[call_sid] = session  # the console's live page reads it
        self.deadlines.on_start()
        log.info("call %s: media stream %s started", call_sid, info.stream_sid)
        return session

    def _tape(self, call_sid: str) -> CallTape | None:
        """The call's recording when recordings are on; a disk that refuses the file costs
        the recording, never the call."""
        settings = self.runtime.settings
        if not settings.recordings:
            return None
        try:
            sink = self.runtime.recordings.open(call_sid)
        except OSError as err:
            log.error("call %s: cannot record (%s); the call goes on unrecorded", call_sid, err)
            return None
        return CallTape(sink, MONOTONIC, max_s=settings.max_call_s)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.sender.cancel()


def _end(ended: asyncio.Future[str], reason: str) -> None:
    if not ended.done():
        ended.set_result(reason)


async def handle_media_socket(socket: WebSocket, runtime: Runtime) -> None:
    """Run one media stream until `stop`, a socket close or an error; always close the call."""
    await run_socket(socket, runtime, MediaFrames(socket, runtime), what="media", noun="frame",
                     max_per_s=MAX_FRAMES_PER_S, max_bad=MAX_BAD_FRAMES, log_bad_every=100)
