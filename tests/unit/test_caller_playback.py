"""The simulated Twilio playout buffer, stepped one 20 ms tick at a time: ticks are the clock."""

from __future__ import annotations

import wave

import numpy as np

from appliance.caller.playback import Playback
from appliance.core.audio import FRAME_BYTES, pcm16_to_ulaw8k, ulaw_decode


def tone(frames: int) -> bytes:
    t = np.arange(frames * FRAME_BYTES) / 8000
    return pcm16_to_ulaw8k((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 8000)


def run(playback: Playback, ticks: int) -> list[tuple[str, ...]]:
    return [playback.tick().marks for _ in range(ticks)]


def test_marks_are_echoed_in_order_when_playout_reaches_them() -> None:
    playback = Playback()
    playback.append(tone(2)[:300])  # a frame and most of another
    playback.mark("a")
    playback.append(tone(1))
    playback.mark("b")
    playback.mark("c")  # no audio between b and c: both come back together, in order

    marks = run(playback, 4)

    assert marks == [(), ("a",), ("b", "c"), ()]
    assert playback.pending == 0
    assert playback.ticks == 4 and len(playback.timeline) == 4 * FRAME_BYTES


def test_mark_on_an_empty_buffer_comes_back_on_the_next_tick() -> None:
    playback = Playback()
    run(playback, 3)
    playback.mark("now")
    assert run(playback, 1) == [("now",)]


def test_ticks_play_server_audio_then_silence() -> None:
    playback = Playback()
    playback.append(tone(2))
    first, second, third = (playback.tick() for _ in range(3))
    assert (first.position, second.position, third.position) == (0, FRAME_BYTES, None)
    assert first.voiced and second.voiced and not third.voiced
    assert third.frame == b"\xff" * FRAME_BYTES


def test_clear_drops_unplayed_audio_and_returns_pending_marks() -> None:
    playback = Playback()
    playback.append(tone(5))
    playback.mark("x")
    playback.append(tone(1))
    playback.mark("y")
    run(playback, 1)

    assert playback.clear() == ("x", "y")
    assert playback.pending == 0
    assert run(playback, 2) == [(), ()]  # never echoed twice

    silent = playback.tick()
    assert silent.position is None and not silent.voiced
    # Offsets stay absolute across the clear: new audio starts after everything ever received.
    playback.append(tone(1))
    playback.mark("z")
    after = playback.tick()
    assert after.position == 6 * FRAME_BYTES and after.marks == ("z",)


def test_timeline_wav_holds_every_tick_including_silence(tmp_path) -> None:
    playback = Playback()
    playback.append(tone(3))
    run(playback, 10)
    path = tmp_path / "heard.wav"

    playback.write_wav(path)

    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == 10 * FRAME_BYTES
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    np.testing.assert_array_equal(pcm[: 3 * FRAME_BYTES], ulaw_decode(tone(3)))
    assert not pcm[3 * FRAME_BYTES :].any()
