"""Audio out to a Media Streams caller: 20 ms frames, a mark after each piece, and what was heard.

Twilio plays what it is sent in order and echoes each mark once the audio before it has played,
so a piece (a sentence, a fixed phrase) is followed by a uniquely named mark; a mark echoed means
the caller heard that piece. The playout keeps the marks not yet echoed (the caller still has
audio queued), lets a turn wait until a piece was heard, and lets a barge-in drop the rest.
One piece plays at a time (a lock), so the frames of two pieces never interleave.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from appliance.core.audio import FRAME_BYTES, TELEPHONE_RATE, frames
from appliance.core.clock import Clock, wait_at_most
from appliance.core.spoken import AgentTurn, SpokenPiece

log = logging.getLogger(__name__)

MARK_WAIT_S = 15.0
# Marks sent and not echoed that we keep: a peer that never echoes them must not grow the list
# for hours. A real reply has a handful (one per sentence); past this the oldest are forgotten.
MAX_OUTSTANDING_MARKS = 200
# Our naming convention for marks after a "please hold" phrase (not Twilio's): the answer is
# still coming, so a listener should not take the quiet that follows for the end of the reply.
HOLD_MARK_PREFIX = "hold-"


class CallTransport(Protocol):
    """How the session talks back to the caller; implemented by the telephony layer."""

    async def send_audio(self, ulaw: bytes) -> None: ...
    async def send_mark(self, name: str) -> None: ...
    async def clear(self) -> None: ...
    async def hang_up(self) -> None: ...
    async def transfer(self, number: str) -> None: ...


class Playout:
    def __init__(self, transport: CallTransport, clock: Clock,
                 on_audio: Callable[[], None]) -> None:
        self.transport = transport
        self.clock = clock
        self.lock = asyncio.Lock()  # one piece of audio at a time: never interleave frames
        self._on_audio = on_audio  # called before each frame goes out (the session is speaking)
        self._outstanding: list[str] = []  # marks sent, not yet echoed
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._numbers = itertools.count(1)

    @property
    def playing(self) -> bool:
        """The caller still has audio of ours queued (some mark has not come back)."""
        return bool(self._outstanding)

    @property
    def last_mark(self) -> str | None:
        return self._outstanding[-1] if self._outstanding else None

    # --- sending ---------------------------------------------------------------------------

    async def stream(self, turn: AgentTurn, text: str,
                     chunks: AsyncIterator[bytes]) -> float | None:
        """Send a synthesized piece as whole frames as it comes, then its mark; the time the
        first frame went out (None if there was no audio). Call with :attr:`lock` held."""
        first: float | None = None
        sent = 0
        pending = b""
        async for chunk in chunks:
            pending += chunk
            whole = len(pending) - len(pending) % FRAME_BYTES
            for frame in frames(pending[:whole]):
                await self._send_frame(frame)
            sent += whole
            pending = pending[whole:]
            if first is None and sent:
                first = self.clock.now()
        for frame in frames(pending):
            await self._send_frame(frame)
            sent += FRAME_BYTES
        first = first or (self.clock.now() if sent else None)
        if sent:
            await self._send_mark(turn, text, sent / TELEPHONE_RATE)
        return first

    async def play(self, turn: AgentTurn, text: str, audio: bytes, *, hold: bool = False) -> None:
        """Send pre-synthesized audio and its mark. Call with :attr:`lock` held."""
        for frame in frames(audio):
            await self._send_frame(frame)
        await self._send_mark(turn, text, len(audio) / TELEPHONE_RATE, hold=hold)

    async def _send_frame(self, frame: bytes) -> None:
        self._on_audio()
        await self.transport.send_audio(frame)

    async def _send_mark(self, turn: AgentTurn, text: str, seconds: float,
                         hold: bool = False) -> None:
        number = next(self._numbers)  # unique: fixed phrases share the turn's idx
        name = f"{HOLD_MARK_PREFIX}{number}" if hold else f"t{turn.idx}-{number}"
        if turn.play_started is None:
            turn.play_started = self.clock.now()
        turn.pieces.append(SpokenPiece(text=text, mark=name, seconds=seconds))
        self._outstanding.append(name)
        if len(self._outstanding) > MAX_OUTSTANDING_MARKS:
            forgotten = self._outstanding.pop(0)
            log.warning("mark %s never came back; %d marks unacknowledged, forgetting the oldest",
                        forgotten, MAX_OUTSTANDING_MARKS)
        await self.transport.send_mark(name)

    # --- what came back --------------------------------------------------------------------

    def on_mark(self, name: str, turn: AgentTurn | None) -> None:
        """Twilio played everything up to ``name``: the piece is heard, the next one starts."""
        if name in self._outstanding:
            self._outstanding.remove(name)
        if turn is not None:
            for piece in turn.pieces:
                if piece.mark == name and not piece.played:
                    piece.played = True
                    turn.play_started = self.clock.now()
        if waiter := self._waiters.pop(name, None):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_played(self, mark: str | None) -> None:
        """Until the caller heard ``mark``'s piece (or it was cleared, or too long passed)."""
        if mark is None or mark not in self._outstanding:
            return
        waiter = self._waiters.setdefault(mark, asyncio.get_running_loop().create_future())
        try:
            if not await wait_at_most(waiter, MARK_WAIT_S, self.clock):
                log.warning("mark %s never came back", mark)
        finally:
            if self._waiters.get(mark) is waiter:
                del self._waiters[mark]  # timed out or cancelled: nobody is left to answer

    @property
    def waiting(self) -> int:
        """Marks someone is waiting for (bounded: a timed-out wait leaves nothing behind)."""
        return len(self._waiters)

    def clear(self) -> None:
        """Forget the queued audio (the transport is told to drop it by the caller of this)."""
        self._outstanding.clear()

    def close(self) -> None:
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()
