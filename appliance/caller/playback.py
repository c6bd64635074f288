"""Twilio's side of outbound audio: a playout buffer with marks and ``clear``, one tick at a time.

Twilio buffers whatever the app sends and plays it at real time; a ``mark`` comes back when the
audio sent before it has been played, and ``clear`` drops the unplayed rest and returns every
pending mark at once. The buffer here is driven by ``tick()`` (one 20 ms frame per call) rather
than a clock, so it is pure and tests can step it frame by frame.

Positions are absolute byte offsets in everything the server ever sent, so a caller can tell
which reply a played frame belongs to even across ``clear``s.
"""

from __future__ import annotations

import wave
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from appliance.core.audio import FRAME_BYTES, TELEPHONE_RATE, ULAW_SILENCE, is_voiced, ulaw_decode

FRAME_S = FRAME_BYTES / TELEPHONE_RATE  # 0.02 s
_SILENT_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Tick:
    """What one 20 ms tick of playout did."""

    frame: bytes  # the 160 bytes the caller heard (padded with silence)
    position: int | None  # offset of the frame's first server byte; None when nothing was queued
    voiced: bool  # whether the frame carried sound
    marks: tuple[str, ...]  # marks the playout reached during this tick, to echo in order


class Playback:
    """Simulated Twilio playout buffer; also records the caller's ear as a μ-law timeline."""

    def __init__(self) -> None:
        self._queue = bytearray()
        self._marks: deque[tuple[int, str]] = deque()
        self.received = 0  # bytes ever appended
        self.consumed = 0  # bytes played or dropped by clear
        self.ticks = 0
        self.timeline = bytearray()

    @property
    def pending(self) -> int:
        """Bytes queued but not yet played."""
        return len(self._queue)

    def append(self, ulaw: bytes) -> None:
        """Queue server audio behind whatever is still unplayed."""
        self._queue += ulaw
        self.received += len(ulaw)

    def mark(self, name: str) -> None:
        """Queue a mark at the current end of the audio; echoed once playout gets there."""
        self._marks.append((self.received, name))

    def clear(self) -> tuple[str, ...]:
        """Drop unplayed audio; returns every pending mark, which Twilio echoes immediately."""
        self.consumed = self.received
        self._queue.clear()
        names = tuple(name for _, name in self._marks)
        self._marks.clear()
        return names

    def tick(self) -> Tick:
        """Play one frame (silence if the queue is empty) and report the marks it passed."""
        position = self.consumed if self._queue else None
        chunk = bytes(self._queue[:FRAME_BYTES])
        del self._queue[:FRAME_BYTES]
        self.consumed += len(chunk)
        frame = chunk + _SILENT_FRAME[len(chunk) :]
        marks: list[str] = []
        while self._marks and self._marks[0][0] <= self.consumed:
            marks.append(self._marks.popleft()[1])
        self.ticks += 1
        self.timeline += frame
        return Tick(frame, position, bool(chunk) and is_voiced(frame), tuple(marks))

    def write_wav(self, path: str | Path) -> None:
        """The timeline as 8 kHz mono 16-bit PCM, for listening to what the caller heard."""
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(TELEPHONE_RATE)
            out.writeframes(ulaw_decode(bytes(self.timeline)).astype("<i2").tobytes())
