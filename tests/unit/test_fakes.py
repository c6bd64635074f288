"""The scripted fakes behave as their Protocols promise, so session tests can trust them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.core.audio import is_voiced
from appliance.engines.base import ChatMessage, Llm, Stt, Tts, Vad
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts, FakeVad


def test_fakes_satisfy_the_protocols() -> None:
    vad: Vad = FakeVad()
    stt: Stt = FakeStt()
    llm: Llm = FakeLlm()
    tts: Tts = FakeTts()
    assert [e.info.slot for e in (vad, stt, llm, tts)] == ["vad", "stt", "llm", "tts"]


def test_fake_vad_script_buffers_partial_windows() -> None:
    stream = FakeVad(script=[0.9, 0.8]).stream()
    assert stream.probabilities(np.zeros(700, dtype=np.float32)) == [0.9]
    assert stream.probabilities(np.zeros(700, dtype=np.float32)) == [0.8]
    assert stream.probabilities(np.zeros(200, dtype=np.float32)) == [0.0]  # script exhausted
    stream.reset()
    assert stream.probabilities(np.zeros(512, dtype=np.float32)) == [0.9]


def test_fake_vad_energy_mode() -> None:
    stream = FakeVad().stream()
    loud = 0.3 * np.sin(np.arange(512, dtype=np.float32))
    assert stream.probabilities(np.concatenate((np.zeros(512, np.float32), loud))) == [0.0, 1.0]


def test_fake_stt_scripts_texts_and_errors() -> None:
    stt = FakeStt(["first", "second"])
    texts = [stt.transcribe(np.zeros(n, dtype=np.float32)).text for n in (10, 20, 30)]
    assert texts == ["first", "second", "second"]
    assert stt.calls == [10, 20, 30]
    stt.error = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        stt.transcribe(np.zeros(1, dtype=np.float32))


def test_fake_llm_counts_open_streams_and_early_close() -> None:
    llm = FakeLlm(tokens=["a", "b", "c"])
    stream = llm.stream_chat([ChatMessage("user", "hi")], max_tokens=10, temperature=0.0)
    assert next(stream) == "a" and llm.active == 1
    stream.close()
    assert llm.active == 0 and llm.produced == 1
    assert list(llm.stream_chat([], max_tokens=2, temperature=0.0)) == ["a", "b"]
    assert llm.requests[0] == [ChatMessage("user", "hi")]


def test_fake_tts_makes_voiced_ulaw_of_the_asked_length() -> None:
    tts = FakeTts(ms=300, chunk_ms=100)

    async def collect() -> list[bytes]:
        return [c async for c in tts.synthesize("hello")]

    chunks = asyncio.run(collect())
    assert [len(c) for c in chunks] == [800, 800, 800]
    assert all(is_voiced(c[:160]) for c in chunks)
    assert tts.texts == ["hello"]
    tts.error = ConnectionError("down")
    with pytest.raises(ConnectionError):
        asyncio.run(collect())
