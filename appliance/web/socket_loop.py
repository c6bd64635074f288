"""The receive loop both Twilio sockets share: rate limit, refuse bad frames, deadlines, always
close.

Each front door supplies a :class:`FrameHandler` that decodes and dispatches one frame (and
starts its session when the first real message arrives); the loop owns the rest. Frames over
the rate budget are dropped; a socket that sends mostly garbage is closed as failed; a socket
that misses a deadline (no start, no media, too long) or that the handler gives up on (a ticket
refused, an audio flood, a peer that stopped reading) is closed as failed too. However the
socket ends, the session closes with the reason, which the call log keeps, and its slot is freed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from litestar.status_codes import WS_1008_POLICY_VIOLATION

from appliance.logs import CALL_SID
from appliance.telephony.errors import ProtocolError
from appliance.web.deadlines import SocketDeadlines
from appliance.web.flood import FloodGuard
from appliance.web.runtime import Runtime

log = logging.getLogger(__name__)


class SocketRefused(Exception):
    """End this socket now (not one bad frame): ``reason`` is a short key counted by reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


S = TypeVar("S")


async def start_admitted(runtime: Runtime, call_sid: str, ticket: str,
                         start: Callable[[], Awaitable[S]]) -> S:
    """Claim the slot the webhook reserved for ``call_sid`` with its ticket, then ``start`` the
    session; a refused claim ends the socket, and a start that fails gives the slot back."""
    if (refusal := await runtime.calls.claim(call_sid, ticket)) is not None:
        raise SocketRefused(refusal, f"call {call_sid}")
    try:
        return await start()
    except Exception:
        runtime.calls.release(call_sid)  # a failed start never keeps its slot
        raise


class Session(Protocol):
    call_sid: str

    async def close(self, reason: str, status: str = "completed") -> None: ...


class FrameHandler(Protocol):
    @property
    def session(self) -> Session | None:
        """None until the start (or setup) message."""
        ...

    @property
    def deadlines(self) -> SocketDeadlines: ...

    @property
    def ended(self) -> asyncio.Future[str]:
        """Set (with the reason) when the handler's peer must go: it stopped reading."""
        ...

    async def handle(self, frame: str) -> str | None:
        """Decode and dispatch one frame (ProtocolError if refused, SocketRefused to end the
        socket); a reason to stop, or None."""
        ...

    def stop(self) -> None:
        """Stop the sender task(s); the session is closed already."""
        ...


async def run_socket(socket: WebSocket, runtime: Runtime, handler: FrameHandler, *, what: str,
                     noun: str, max_per_s: int, max_bad: int, log_bad_every: int = 1) -> None:
    """Feed the socket's frames to ``handler`` until a stop, a close, an error or a deadline."""
    receiving = asyncio.create_task(_receive(socket, runtime, handler, what=what, noun=noun,
                                             max_per_s=max_per_s, max_bad=max_bad,
                                             log_bad_every=log_bad_every))
    expiry = asyncio.create_task(handler.deadlines.expired())
    reason, status = "socket closed", "completed"
    try:
        waits: set[asyncio.Future[object]] = {receiving, expiry, handler.ended}  # type: ignore[arg-type]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done():
            reason, status = receiving.result()
        else:
            reason = expiry.result() if expiry.done() else handler.ended.result()
            status = "failed"
            if handler.session is None:  # counted and logged at a bounded rate: a flood of idle
                runtime.refuse(what, "no-start", reason)  # sockets is not a flood of lines
            else:
                log.warning("%s socket %s: %s; closing", what, handler.session.call_sid, reason)
    finally:
        for task in (receiving, expiry):
            task.cancel()
        await asyncio.gather(receiving, expiry, return_exceptions=True)
        if handler.session is not None:
            CALL_SID.set(handler.session.call_sid)  # the close's lines (set in the reader task)
            await handler.session.close(reason, status=status)
            runtime.calls.release(handler.session.call_sid)
            runtime.sessions.pop(handler.session.call_sid, None)
        handler.stop()
        if status == "failed":
            await _close(socket, reason)


async def _receive(socket: WebSocket, runtime: Runtime, handler: FrameHandler, *, what: str,
                   noun: str, max_per_s: int, max_bad: int,
                   log_bad_every: int) -> tuple[str, str]:
    """The receive loop proper: (reason, status) once it ends."""
    flood, bad = FloodGuard(max_per_s, what), 0
    try:
        async for frame in socket.iter_data("text"):
            if not flood.allow():
                continue
            try:
                if (stop := await handler.handle(frame)) is not None:
                    return stop, "completed"
            except ProtocolError as err:
                bad += 1
                if bad <= 5 or bad % log_bad_every == 0:
                    log.warning("%s socket: refused %s (%d so far): %s", what, noun, bad, err)
                if bad >= max_bad:
                    return f"too many bad {noun}s", "failed"
    except WebSocketDisconnect:
        pass
    except SocketRefused as err:
        runtime.refuse(what, err.reason, err.detail)
        return f"refused: {err}", "failed"
    except Exception as err:
        log.exception("%s socket failed", what)
        return f"error: {type(err).__name__}: {err}", "failed"
    return "socket closed", "completed"


async def _close(socket: WebSocket, reason: str) -> None:
    try:
        await socket.close(code=WS_1008_POLICY_VIOLATION, reason=reason[:120])
    except Exception as err:  # already closed by the peer: nothing left to tell it
        log.debug("socket close: %s", err)
