"""The call tape: both channels on the call's clock, the agent's as the caller heard it."""

from __future__ import annotations

import asyncio

import numpy as np

from appliance.core.audio import FRAME_BYTES, ulaw_decode, ulaw_encode
from appliance.core.call_audio import COMMIT_S, LATE_S, CallTape, Track

RATE = 8000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


class Sink:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.closed = False

    def write(self, stereo: np.ndarray) -> None:
        assert not self.closed
        self.blocks.append(stereo)

    async def close(self) -> None:
        self.closed = True

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, 2), np.int16)


def frame(level: int) -> bytes:
    """One 20 ms frame at a constant level, so where it landed can be read back."""
    return ulaw_encode(np.full(FRAME_BYTES, level, dtype=np.int16))


LOUD = int(ulaw_decode(frame(8000))[0])


def tape(max_s: float = 600.0) -> tuple[CallTape, Sink, Clock]:
    sink, clock = Sink(), Clock()
    return CallTape(sink, clock, max_s=max_s), sink, clock


def seconds_voiced(channel: np.ndarray) -> list[tuple[float, float]]:
    """Spans (start, end) in seconds where the channel is not silent."""
    voiced = np.flatnonzero(channel != 0)
    if not voiced.size:
        return []
    breaks = np.flatnonzero(np.diff(voiced) > 1)
    starts = np.concatenate(([voiced[0]], voiced[breaks + 1]))
    ends = np.concatenate((voiced[breaks], [voiced[-1]])) + 1
    return [(s / RATE, e / RATE) for s, e in zip(starts, ends, strict=True)]


def test_track_places_cuts_and_takes() -> None:
    track = Track()
    track.put(10, np.ones(5, np.int16))
    track.put(2 * RATE, np.full(3, 2, np.int16))  # grows past its first capacity
    assert track.end == 2 * RATE + 3
    first = track.take(12)
    assert first.tolist() == [0] * 10 + [1, 1]
    track.put(0, np.full(20, 7, np.int16))  # before what was taken: only the open part lands
    assert track.take(20).tolist() == [7] * 8
    track.truncate(2 * RATE + 1)
    rest = track.take(2 * RATE + 3)
    assert rest[-3:].tolist() == [2, 0, 0]


def test_caller_frames_land_at_their_timestamps_and_gaps_are_silence() -> None:
    rec, sink, clock = tape()
    for ms in (0, 20, 40, 1000, 1020):  # Twilio sent nothing between 60 ms and 1 s
        clock.t = 100 + ms / 1000
        rec.caller(frame(8000), ms)
    clock.t += 0.5
    assert asyncio.run(rec.close()) == 1.04
    left = sink.audio[:, 0]
    assert seconds_voiced(left) == [(0.0, 0.06), (1.0, 1.04)]
    assert not sink.audio[:, 1].any()


def test_frames_without_timestamps_follow_each_other() -> None:
    rec, sink, _ = tape()
    for _ in range(3):
        rec.caller(frame(8000), None)
    asyncio.run(rec.close())
    assert seconds_voiced(sink.audio[:, 0]) == [(0.0, 0.06)]


def test_agent_audio_plays_in_real_time_after_what_was_queued() -> None:
    """A reply sent in a burst plays out frame after frame from the moment it was sent."""
    rec, sink, clock = tape()
    clock.t += 0.5
    for _ in range(50):  # one second of reply, sent at once
        rec.agent(frame(8000))
    clock.t += 2.0
    asyncio.run(rec.close())
    assert seconds_voiced(sink.audio[:, 1]) == [(0.5, 1.5)]


def test_barge_in_drops_what_was_queued_and_not_played() -> None:
    rec, sink, clock = tape()
    for _ in range(150):  # three seconds of reply, sent at 0 s
        rec.agent(frame(8000))
    clock.t += 1.2  # the caller barges in 1.2 s into it
    rec.clear()
    clock.t += 0.8
    for _ in range(10):  # the next reply, 2 s in
        rec.agent(frame(8000))
    clock.t += 1.0
    asyncio.run(rec.close())
    assert seconds_voiced(sink.audio[:, 1]) == [(0.0, 1.2), (2.0, 2.2)]


def test_audio_still_queued_when_the_call_ends_was_never_heard() -> None:
    rec, sink, clock = tape()
    for _ in range(100):  # two seconds sent
        rec.agent(frame(8000))
    clock.t += 0.5  # the caller hung up half a second in
    assert asyncio.run(rec.close()) == 0.5
    assert seconds_voiced(sink.audio[:, 1]) == [(0.0, 0.5)]


def test_the_channels_stay_aligned_on_the_call_clock() -> None:
    """The caller speaks at 1 s, the agent answers at 2 s: so the file says."""
    rec, sink, clock = tape()
    for i in range(150):
        ms = 20 * i
        clock.t = 100 + ms / 1000
        rec.caller(frame(8000 if 1000 <= ms < 1500 else 0), ms)
        if ms == 2000:
            for _ in range(25):
                rec.agent(frame(-8000))
    clock.t += 1
    asyncio.run(rec.close())
    assert seconds_voiced(sink.audio[:, 0]) == [(1.0, 1.5)]
    assert seconds_voiced(sink.audio[:, 1]) == [(2.0, 2.5)]
    assert sink.audio[int(1.2 * RATE), 0] == LOUD


def test_audio_is_handed_over_as_the_call_goes_in_blocks() -> None:
    """Written incrementally, about once a second, never what could still change."""
    rec, sink, clock = tape()
    for i in range(250):  # five seconds of caller audio, in real time
        clock.t = 100 + i * 0.02
        rec.caller(frame(8000), 20 * i)
    handed = len(sink.audio)
    assert handed >= (5 - LATE_S - COMMIT_S) * RATE  # most of it is out already
    assert handed <= (clock.t - 100 - LATE_S) * RATE + 1  # nothing newer than LATE_S
    assert all(len(b) >= COMMIT_S * RATE for b in sink.blocks)
    asyncio.run(rec.close())
    assert len(sink.audio) == 5 * RATE and sink.closed


def test_a_timestamp_far_ahead_of_the_clock_is_not_believed() -> None:
    rec, sink, _ = tape()
    rec.caller(frame(8000), 0)
    rec.caller(frame(8000), 3_600_000)  # an hour ahead: follows the first frame instead
    assert asyncio.run(rec.close()) == 0.04


def test_the_tape_stops_at_the_longest_call() -> None:
    rec, sink, clock = tape(max_s=1.0)
    for i in range(100):
        clock.t = 100 + i * 0.02
        rec.caller(frame(8000), 20 * i)
        rec.agent(frame(8000))
    assert asyncio.run(rec.close()) == 1.0
