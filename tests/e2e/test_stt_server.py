"""Speech-to-text from an OpenAI-compatible transcription server, with the in-process model
behind it: tested against a real HTTP server (uvicorn on loopback) running the real whisper."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import soxr
import uvicorn
from litestar import Litestar, Request, post
from litestar.datastructures import UploadFile

from appliance.bench.runner import free_port
from appliance.config import ConfigError, load_settings
from appliance.engines.breaker import CircuitBreaker
from appliance.engines.faster_whisper_stt import FasterWhisperStt
from appliance.engines.openai_stt import FailoverStt, OpenAiStt, with_stt_server
from appliance.engines.piper_tts import PiperTts
from appliance.models.locate import default_path

pytestmark = pytest.mark.slow
QUESTION = "What time do you open tomorrow?"


@dataclass
class Server:
    url: str
    requests: list[str] = field(default_factory=list)  # the form's model name, per request
    delay_s: float = 0.0


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperStt:
    return FasterWhisperStt(default_path("stt"))


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    pcm, rate = PiperTts(default_path("tts")).synthesize_pcm(QUESTION)
    return soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000)


@contextmanager
def transcription_server(whisper: FasterWhisperStt) -> Iterator[Server]:
    """A minimal OpenAI-compatible ``/v1/audio/transcriptions`` in front of the real model."""
    port = free_port()
    state = Server(url=f"http://127.0.0.1:{port}/v1")

    @post("/v1/audio/transcriptions", status_code=200)
    async def transcriptions(request: Request[Any, Any, Any]) -> dict[str, str]:
        form = await request.form()
        upload = form["file"]
        assert isinstance(upload, UploadFile)
        state.requests.append(str(form["model"]))
        await asyncio.sleep(state.delay_s)
        pcm = np.frombuffer((await upload.read())[44:], dtype=np.int16)  # after the WAV header
        heard = await asyncio.to_thread(whisper.transcribe, pcm.astype(np.float32) / 32768)
        return {"text": heard.text}

    server = uvicorn.Server(uvicorn.Config(Litestar([transcriptions]), host="127.0.0.1",
                                           port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


def test_the_server_transcribes_and_the_local_model_is_not_asked(
        whisper: FasterWhisperStt, question: np.ndarray) -> None:
    with transcription_server(whisper) as server:
        stt = FailoverStt(OpenAiStt(server.url, "tiny.en", language="en"), whisper,
                          CircuitBreaker(2, 15.0))
        heard = stt.transcribe(question)
    assert server.requests == ["tiny.en"]
    assert {"time", "open", "tomorrow"} <= _words(heard.text)


def test_a_slow_or_dead_server_is_replaced_by_the_local_model_then_skipped(
        whisper: FasterWhisperStt, question: np.ndarray) -> None:
    with transcription_server(whisper) as server:
        server.delay_s = 1.0
        stt = FailoverStt(OpenAiStt(server.url, "tiny.en", language="en", timeout_s=0.2),
                          whisper, CircuitBreaker(2, 60.0))
        answers = [stt.transcribe(question).text for _ in range(3)]
        assert len(server.requests) == 2  # two time-outs opened the breaker: the third stayed
        dead_url = server.url
    dead = FailoverStt(OpenAiStt(dead_url, "tiny.en", language="en"), whisper,
                       CircuitBreaker(2, 60.0))
    answers.append(dead.transcribe(question).text)  # connection refused
    local = whisper.transcribe(question).text
    assert answers == [local] * 4


def test_settings_select_the_server_and_refuse_a_bad_url(whisper: FasterWhisperStt) -> None:
    local = load_settings(environ={})
    assert with_stt_server(local, lambda: whisper) is whisper
    remote = load_settings(environ={"APPLIANCE_STT_BACKEND": "openai",
                                    "APPLIANCE_STT_URL": "http://10.0.0.9:8000/v1",
                                    "APPLIANCE_STT_API_KEY": "sk-secret-key-123"})
    chosen = with_stt_server(remote, lambda: whisper)
    assert isinstance(chosen, FailoverStt) and chosen.local is whisper
    assert "sk-secret" not in repr(remote.redacted())
    with pytest.raises(ConfigError, match="APPLIANCE_STT_URL"):
        with_stt_server(load_settings(environ={"APPLIANCE_STT_BACKEND": "openai"}),
                        lambda: whisper)
