import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from appliance.config import load_settings
from appliance.core.audio import FRAME_BYTES, pcm16_to_ulaw8k
from appliance.core.listener import Listener
from appliance.core.turns import TurnEvent
from appliance.engines.fakes import FakeVad


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw8k((9000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 8000)


def hear_all(listener: Listener, ulaw: bytes) -> list:
    async def run() -> list:
        out = []
        for i in range(0, len(ulaw), FRAME_BYTES):
            out += await listener.hear(ulaw[i:i + FRAME_BYTES])
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
    assert 1.0 + settings.preroll_ms / 1000 <= seconds <= 1.0 + 0.6 + 0.6
    assert heard[1].audio.size < end.audio.size


def test_carried_audio_is_prepended_to_the_next_utterance() -> None:
    settings = load_settings(environ={})
    with ThreadPoolExecutor(1) as pool:
        listener = Listener(settings, FakeVad(), pool)
        listener.carry_over([np.ones(16000, np.float32)])
        heard = hear_all(listener, tone(0.5) + b"\xff" * 8000)
    end = heard[-1]
    assert end.event is TurnEvent.SPEECH_END and np.all(end.audio[:16000] == 1.0)
