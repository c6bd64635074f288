"""The receive loop both Twilio sockets share: rate limit, refuse bad frames, always close.

Each front door supplies a :class:`FrameHandler` that decodes and dispatches one frame (and
starts its session when the first real message arrives); the loop owns the rest. Frames over
the rate budget are dropped; a socket that sends mostly garbage is closed as failed; however
the socket ends, the session closes with the reason, which the call log keeps.
"""

from __future__ import annotations

import logging
from typing import Protocol

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from appliance.telephony.errors import ProtocolError
from appliance.web.flood import FloodGuard
from appliance.web.runtime import Runtime

log = logging.getLogger(__name__)


class Session(Protocol):
    call_sid: str

    async def close(self, reason: str, status: str = "completed") -> None: ...


class FrameHandler(Protocol):
    @property
    def session(self) -> Session | None:
        """None until the start (or setup) message."""
        ...

    async def handle(self, frame: str) -> str | None:
        """Decode and dispatch one frame (ProtocolError if refused); a reason to stop, or None."""
        ...

    def stop(self) -> None:
        """Stop the sender task(s); the session is closed already."""
        ...


async def run_socket(socket: WebSocket, runtime: Runtime, handler: FrameHandler, *, what: str,
                     noun: str, max_per_s: int, max_bad: int, log_bad_every: int = 1) -> None:
    """Feed the socket's frames to ``handler`` until a stop, a close or an error."""
    reason, status = "socket closed", "completed"
    flood, bad = FloodGuard(max_per_s, what), 0
    try:
        async for frame in socket.iter_data("text"):
            if not flood.allow():
                continue
            try:
                if (stop := await handler.handle(frame)) is not None:
                    reason = stop
                    break
            except ProtocolError as err:
                bad += 1
                if bad <= 5 or bad % log_bad_every == 0:
                    log.warning("%s socket: refused %s (%d so far): %s", what, noun, bad, err)
                if bad >= max_bad:
                    reason, status = f"too many bad {noun}s", "failed"
                    break
    except WebSocketDisconnect:
        reason = "socket closed"
    except Exception as err:
        log.exception("%s socket failed", what)
        reason, status = f"error: {type(err).__name__}: {err}", "failed"
    finally:
        if handler.session is not None:
            await handler.session.close(reason, status=status)
            runtime.calls.release(handler.session.call_sid)
            runtime.sessions.pop(handler.session.call_sid, None)
        handler.stop()
