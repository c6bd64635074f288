import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from appliance.config import load_settings
from appliance.core.audio import FRAME_BYTES, pcm16_to_ulaw8k
from appliance.core.listener import Listener
from appliance.core.turns import TurnEvent
from appliance.engines.fakes import FakeTurnDetector, FakeVad


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw8k((9000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 8000)


def hear_all(listener: Listener, ulaw: bytes, pace_s: float = 0.0) -> list:
    """Feed ``ulaw`` frame by frame; ``pace_s`` between frames gives worker results (the turn
    model's verdict) time to land, as the 20 ms between real frames does."""
    async def run() -> list:
        out = []
        for i in range(0, len(ulaw), FRAME_BYTES):
            out += await listener.hear(ulaw[i:i + FRAME_BYTES])
            await asyncio.sleep(pace_s)
        return out
    return asyncio.run(run())


def test_frames_become_start_pause_end_with_preroll() -> None:
    settings = load_settings(environ={})
    with ThreadPoolExecutor(1) as pool:
        listener = Listener(settings, FakeVad(), pool)
        heard = hear_all(listener, b"\xff" * 8000 + tone(1.0) + b"\xff" * 8000)
    assert [h.event for h in heard] == [TurnEvent.SPEECH_START, TurnEvent.PAUSE,
                                        TurnEvent.SPEECH_END]
    end = heard[-1]
    assert end.silence_s >= settings.endpoint_silence_ms / 1000
    seconds = end.audio.size / 16000
    # 1 s of speech, the pre-roll before the confirmed start, and the trailing silence.
    preroll = settings.preroll_ms / 1000
    assert 1.0 + preroll <= seconds <= 1.0 + preroll + 0.6 + 0.6
    assert heard[1].audio.size < end.audio.size


def test_carried_audio_is_prepended_to_the_next_utterance() -> None:
    settings = load_settings(environ={})
    with ThreadPoolExecutor(1) as pool:
        listener = Listener(settings, FakeVad(), pool)
        listener.carry_over([np.ones(16000, np.float32)])
        heard = hear_all(listener, tone(0.5) + b"\xff" * 8000)
    end = heard[-1]
    assert end.event is TurnEvent.SPEECH_END and np.all(end.audio[:16000] == 1.0)


def end_silence(turn: FakeTurnDetector | None, **env: str) -> float:
    settings = load_settings(environ={f"APPLIANCE_{k.upper()}": v for k, v in env.items()})
    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as turn_pool:
        listener = Listener(settings, FakeVad(), pool, turn, turn_pool)
        heard = hear_all(listener, tone(1.0) + b"\xff" * 16000, pace_s=0.005)
    ends = [h for h in heard if h.event is TurnEvent.SPEECH_END]
    assert len(ends) == 1
    return ends[0].silence_s


def test_a_complete_verdict_ends_the_turn_sooner_than_an_incomplete_one() -> None:
    complete = FakeTurnDetector([0.9])
    assert 0.2 <= end_silence(complete) < 0.4
    assert len(complete.calls) == 1 and complete.calls[0] >= 16000  # it heard the utterance
    assert end_silence(FakeTurnDetector([0.1])) >= 1.0


def test_turn_model_off_or_absent_means_the_fixed_silence() -> None:
    unused = FakeTurnDetector([0.9])
    assert 0.4 <= end_silence(unused, turn_model="false") < 0.5
    assert not unused.calls
    assert 0.4 <= end_silence(None) < 0.5


def test_a_failing_turn_model_falls_back_to_the_fixed_silence() -> None:
    broken = FakeTurnDetector()
    broken.error = RuntimeError("onnx exploded")
    assert 0.4 <= end_silence(broken) < 0.5
