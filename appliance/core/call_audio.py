"""A Media Streams call as the caller lived it: one stereo track, caller left, agent right.

Both channels sit on one timeline in 8 kHz samples from the start of the stream:

- the caller's frames go where Twilio's ``timestamp`` (ms since the stream started) puts them,
  so a frame Twilio never sent becomes silence; a frame without a timestamp follows the last;
- the agent's frames go where the caller heard them. Twilio plays what we send in order, in
  real time, from the moment it arrives: a frame sent at clock time ``t`` plays at ``t`` or when
  the audio queued before it has played, whichever is later. Replies are sent faster than real
  time, so most of a reply waits in that queue; a ``clear`` (barge-in) drops the part not yet
  played, and so does this track. At the end of the call nothing still queued was heard either.

Audio is handed to the :class:`AudioSink` once it can no longer change: the agent's up to now
(a later ``clear`` only drops audio after it), the caller's up to ``LATE_S`` ago (a frame later
than that is cut to what is still open; Twilio's arrive in order, within tens of ms). The sink
is a file writer (``appliance.recordings``); this module knows nothing of file formats.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from appliance.core.audio import TELEPHONE_RATE, ulaw_decode
from appliance.core.clock import Clock
from appliance.core.playout import CallTransport

log = logging.getLogger(__name__)

LATE_S = 1.0  # a caller frame this late after its time is cut, and the gap stays silence
COMMIT_S = 1.0  # hand audio to the sink in blocks of at least this much (a write per second)
# A caller timestamp further than this ahead of the call's clock is not believed (a peer's bug or
# mischief must not make the file hours long): the frame follows the previous one instead.
AHEAD_S = 5.0


class AudioSink(Protocol):
    """Where finished stereo audio goes: ``write`` must not block (it queues), ``close`` waits
    until everything written is on disk."""

    def write(self, stereo: np.ndarray) -> None: ...
    async def close(self) -> None: ...


class Track:
    """One channel's samples from ``start`` on (absolute sample numbers), growing by doubling so
    a reply sent in 20 ms frames is not copied once per frame."""

    def __init__(self) -> None:
        self.start = 0
        self._data = np.zeros(TELEPHONE_RATE, dtype=np.int16)
        self._length = 0  # samples held, from start

    @property
    def end(self) -> int:
        return self.start + self._length

    def put(self, at: int, samples: np.ndarray) -> None:
        """Place ``samples`` at absolute sample ``at``; what falls before ``start`` is cut."""
        if at < self.start:
            samples = samples[self.start - at:]
            at = self.start
        if not samples.size:
            return
        offset = at - self.start
        needed = offset + samples.size
        if needed > self._data.size:
            grown = np.zeros(max(needed, 2 * self._data.size), dtype=np.int16)
            grown[:self._length] = self._data[:self._length]
            self._data = grown
        if offset > self._length:
            self._data[self._length:offset] = 0
        self._data[offset:needed] = samples
        self._length = max(self._length, needed)

    def truncate(self, at: int) -> None:
        """Forget everything from absolute sample ``at`` on."""
        self._length = max(0, min(self._length, at - self.start))

    def take(self, upto: int) -> np.ndarray:
        """The samples from ``start`` to ``upto`` (silence where none), dropped from the track."""
        count = upto - self.start
        out = np.zeros(count, dtype=np.int16)
        held = min(count, self._length)
        out[:held] = self._data[:held]
        self._data[:self._length - held] = self._data[held:self._length]
        self._length -= held
        self.start = upto
        return out


class CallTape:
    """Feeds one call's two channels, aligned, to a sink; see the module docstring."""

    def __init__(self, sink: AudioSink, clock: Clock, *, max_s: float) -> None:
        self._sink = sink
        self._clock = clock
        self._origin = clock.now()
        self._max = int(max_s * TELEPHONE_RATE)
        self._caller = Track()
        self._agent = Track()
        self._played_to = 0  # where the agent's next frame can start playing
        self._written = 0  # samples handed to the sink
        self._closed = False

    @property
    def seconds(self) -> float:
        """How much has been handed to the sink."""
        return self._written / TELEPHONE_RATE

    def _now(self) -> int:
        return int((self._clock.now() - self._origin) * TELEPHONE_RATE)

    def caller(self, ulaw: bytes, timestamp_ms: int | None) -> None:
        """One inbound frame, with Twilio's timestamp when it has one."""
        if self._closed:
            return
        at = self._caller.end if timestamp_ms is None else timestamp_ms * TELEPHONE_RATE // 1000
        if at > self._now() + AHEAD_S * TELEPHONE_RATE:
            at = self._caller.end
        if at + len(ulaw) > self._max:
            return
        self._caller.put(at, ulaw_decode(ulaw))
        self._commit(self._now() - int(LATE_S * TELEPHONE_RATE))

    def agent(self, ulaw: bytes) -> None:
        """One outbound frame, as it is sent: it plays once what was queued before it has."""
        if self._closed:
            return
        at = max(self._played_to, self._now())
        if at + len(ulaw) > self._max:
            return
        self._agent.put(at, ulaw_decode(ulaw))
        self._played_to = at + len(ulaw)
        self._commit(self._now() - int(LATE_S * TELEPHONE_RATE))

    def clear(self) -> None:
        """A barge-in: the caller hears nothing more of what was queued."""
        now = self._now()
        self._agent.truncate(now)
        self._played_to = min(self._played_to, now)

    def _commit(self, upto: int) -> None:
        upto = min(upto, self._now())
        if upto - self._written < COMMIT_S * TELEPHONE_RATE:
            return
        self._write(upto)

    def _write(self, upto: int) -> None:
        if upto <= self._written:
            return
        stereo = np.stack([self._caller.take(upto), self._agent.take(upto)], axis=1)
        self._written = upto
        self._sink.write(stereo)

    async def close(self) -> float:
        """The call ended: what the agent had queued and not played was never heard; the rest
        goes to the sink, which is closed. Returns the recording's length in seconds."""
        if not self._closed:
            self._closed = True
            self.clear()
            self._write(min(max(self._caller.end, self._agent.end), self._max))
            await self._sink.close()
        return self.seconds


class TapedTransport:
    """The call's transport, with what is sent to the caller (and each ``clear``) also taped."""

    def __init__(self, inner: CallTransport, tape: CallTape) -> None:
        self._inner = inner
        self._tape = tape

    async def send_audio(self, ulaw: bytes) -> None:
        self._tape.agent(ulaw)
        await self._inner.send_audio(ulaw)

    async def send_mark(self, name: str) -> None:
        await self._inner.send_mark(name)

    async def clear(self) -> None:
        self._tape.clear()
        await self._inner.clear()

    async def hang_up(self) -> None:
        await self._inner.hang_up()

    async def transfer(self, number: str) -> None:
        await self._inner.transfer(number)
