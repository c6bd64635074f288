"""Scripted stand-ins for the real engines, so call-session tests run in milliseconds.

Each fake follows its Protocol in ``engines.base``, takes its timing as constructor arguments
(delays are real sleeps, in a worker for the blocking ones), records what it was asked, and
raises ``error`` when a test sets it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence

import numpy as np

from appliance.core.audio import TELEPHONE_RATE, pcm16_to_ulaw8k
from appliance.engines.base import (
    ChatMessage,
    EngineInfo,
    PromptUsage,
    ToolCall,
    ToolSpec,
    Transcript,
)

WINDOW_SAMPLES = 512


class FakeVadStream:
    """One call's fake VAD: scripted probabilities per window, or 1/0 by window energy."""

    window_samples = WINDOW_SAMPLES

    def __init__(self, script: Sequence[float] | None, rms_threshold: float) -> None:
        self._script = list(script) if script is not None else None
        self._rms_threshold = rms_threshold
        self._buffer = np.zeros(0, dtype=np.float32)
        self._index = 0

    def probabilities(self, audio16k: np.ndarray) -> list[float]:
        self._buffer = np.concatenate((self._buffer, np.asarray(audio16k, dtype=np.float32)))
        count = len(self._buffer) // WINDOW_SAMPLES
        windows = self._buffer[: count * WINDOW_SAMPLES].reshape(count, WINDOW_SAMPLES)
        self._buffer = self._buffer[count * WINDOW_SAMPLES :]
        return [self._next(window) for window in windows]

    def _next(self, window: np.ndarray) -> float:
        if self._script is None:
            return 1.0 if float(np.sqrt(np.mean(window * window))) > self._rms_threshold else 0.0
        value = self._script[self._index] if self._index < len(self._script) else 0.0
        self._index += 1
        return value

    def reset(self) -> None:
        self._buffer = np.zeros(0, dtype=np.float32)
        self._index = 0


class FakeVad:
    """``script``: one probability per 512-sample window, then 0.0; ``None``: energy-based."""

    def __init__(self, script: Sequence[float] | None = None, rms_threshold: float = 0.01) -> None:
        self.info = EngineInfo(slot="vad", name="fake-vad", version="0")
        self._script = script
        self._rms_threshold = rms_threshold

    def stream(self) -> FakeVadStream:
        return FakeVadStream(self._script, self._rms_threshold)


class FakeStt:
    """Returns scripted texts in turn (the last one repeats) after ``delay_s``."""

    def __init__(self, texts: Sequence[str] = ("hello",), delay_s: float = 0.0) -> None:
        self.info = EngineInfo(slot="stt", name="fake-stt", version="0")
        self._texts = list(texts)
        self._delay_s = delay_s
        self.error: Exception | None = None
        self.calls: list[int] = []  # samples per transcribed utterance
        self._lock = threading.Lock()

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        time.sleep(self._delay_s)
        if self.error is not None:
            raise self.error
        with self._lock:
            index = min(len(self.calls), len(self._texts) - 1)
            self.calls.append(len(audio16k))
        return Transcript(text=self._texts[index])


class FakeTurnDetector:
    """Answers scripted completion probabilities in turn (the last one repeats) after
    ``delay_s``; records how much audio each judgement saw."""

    def __init__(self, probabilities: Sequence[float] = (1.0,), delay_s: float = 0.0) -> None:
        self.info = EngineInfo(slot="turn", name="fake-turn", version="0")
        self._probabilities = list(probabilities)
        self._delay_s = delay_s
        self.error: Exception | None = None
        self.calls: list[int] = []  # samples per judged utterance
        self._lock = threading.Lock()

    def completion(self, audio16k: np.ndarray) -> float:
        time.sleep(self._delay_s)
        if self.error is not None:
            raise self.error
        with self._lock:
            index = min(len(self.calls), len(self._probabilities) - 1)
            self.calls.append(len(audio16k))
        return self._probabilities[index]


class FakeLlm:
    """Yields scripted tokens with delays; tracks open streams so tests can see early closes."""

    def __init__(
        self,
        tokens: Sequence[str] = ("Sure", ",", " we", " open", " at", " nine", "."),
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        calls: Mapping[str, str] | None = None,
    ) -> None:
        self.info = EngineInfo(slot="llm", name="fake-llm", version="0")
        # ``calls`` (caller's words → the function the model calls) declares tool calling.
        self.tool_calling = calls is not None
        self.calls = dict(calls or {})
        self.tool_requests: list[tuple[list[ChatMessage], list[ToolSpec]]] = []
        self._tokens = list(tokens)
        self._first_token_delay_s = first_token_delay_s
        self._token_delay_s = token_delay_s
        self.error: Exception | None = None
        self.requests: list[list[ChatMessage]] = []
        self.active = 0  # streams started and not yet finished or closed
        self.produced = 0  # tokens actually yielded, across all streams
        self._lock = threading.Lock()
        self._cached: dict[str, list[str]] = {}  # session → the words its last prompt left

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
        usage: PromptUsage | None = None,
    ) -> Generator[str, None, None]:
        self.requests.append(list(messages))
        if usage is not None:
            self._read(messages, session_id, usage)
        return self._stream(max_tokens)

    def _read(self, messages: Sequence[ChatMessage], session_id: str,
              usage: PromptUsage) -> None:
        """A word is a token; the session's previous prompt is the cache, reused as far as it
        matches (all but the last word of a repeated prompt, as llama.cpp re-reads one)."""
        words = [w for m in messages for w in (m.role, *m.content.split())]
        cached = self._cached.get(session_id, [])
        pairs = enumerate(zip(cached, words, strict=False))
        reused = next((i for i, (a, b) in pairs if a != b),
                      min(len(cached), len(words)))
        usage.tokens, usage.reused = len(words), min(reused, len(words) - 1)
        usage.evaluated = len(words) - usage.reused
        usage.eval_s, usage.threads = self._first_token_delay_s, 1
        if session_id:
            self._cached[session_id] = words

    def choose_tool(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *,
                    session_id: str = "") -> ToolCall | None:
        """The scripted call for the last user message's words (None: it answers); a name not
        among ``tools`` is returned as is, as a confused model would."""
        self.tool_requests.append((list(messages), list(tools)))
        if self.error is not None:
            raise self.error
        name = self.calls.get(messages[-1].content)
        return ToolCall(name) if name else None

    def _stream(self, max_tokens: int) -> Generator[str, None, None]:
        with self._lock:
            self.active += 1
        try:
            time.sleep(self._first_token_delay_s)
            if self.error is not None:
                raise self.error
            for i, token in enumerate(self._tokens[:max_tokens]):
                if i:
                    time.sleep(self._token_delay_s)
                with self._lock:
                    self.produced += 1
                yield token
        finally:
            with self._lock:
                self.active -= 1


class FakeTts:
    """Speaks any text as ``ms`` of a 440 Hz tone (μ-law 8 kHz) in ``chunk_ms`` pieces."""

    def __init__(
        self,
        ms: int = 500,
        chunk_ms: int = 100,
        first_chunk_delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.info = EngineInfo(slot="tts", name="fake-tts", version="0")
        self._ms = ms
        self._chunk_ms = chunk_ms
        self._first_chunk_delay_s = first_chunk_delay_s
        self._chunk_delay_s = chunk_delay_s
        self.error: Exception | None = None
        self.texts: list[str] = []
        self.chunks_sent = 0
        t = np.arange(TELEPHONE_RATE * chunk_ms // 1000) / TELEPHONE_RATE
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        self._chunk = pcm16_to_ulaw8k(pcm, TELEPHONE_RATE)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        self.texts.append(text)
        await asyncio.sleep(self._first_chunk_delay_s)
        if self.error is not None:
            raise self.error
        for i in range(max(1, self._ms // self._chunk_ms)):
            if i:
                await asyncio.sleep(self._chunk_delay_s)
            self.chunks_sent += 1
            yield self._chunk
