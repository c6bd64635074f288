"""The small interfaces every engine implements, so each can be swapped or faked.

Blocking engines (VAD, STT, LLM, embeddings) expose synchronous methods that callers run in a
worker thread; TTS is natively async because it streams audio and may talk to the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What /healthz and the benchmark report about a loaded engine."""

    slot: str
    name: str
    version: str
    path: str = ""
    device: str = "cpu"


class VadStream(Protocol):
    """Per-call VAD state. Feed 16 kHz float32 audio; get one speech probability per window."""

    window_samples: int

    def probabilities(self, audio16k: np.ndarray) -> list[float]:
        """Speech probability for each complete window in ``audio16k`` (rest is buffered)."""
        ...

    def reset(self) -> None: ...


class Vad(Protocol):
    info: EngineInfo

    def stream(self) -> VadStream:
        """A fresh per-call stream: the recurrent state is never shared between calls."""
        ...


class TurnDetector(Protocol):
    """Judges from the sound of an utterance (words and intonation) whether the caller is done.

    VAD silence alone cannot tell "I'd like to book..." from "What are your hours?"; this can.
    """

    info: EngineInfo

    def completion(self, audio16k: np.ndarray) -> float:
        """Blocking: run in a worker. Probability in [0, 1] that the utterance ending at the end
        of ``audio16k`` (16 kHz mono float32; only its last 8 s are used) is complete."""
        ...


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str = "en"
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0


class Stt(Protocol):
    info: EngineInfo

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        """Blocking: run in a worker. Consumes any lazy generator before returning."""
        ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


class Llm(Protocol):
    info: EngineInfo

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
    ) -> Iterator[str]:
        """Blocking token stream: iterate it in a worker. Closing the iterator stops generation.

        ``session_id`` lets a pool of model instances route a conversation back to the instance
        that already holds its prompt prefix in cache.
        """
        ...


class Tts(Protocol):
    """Speech out as μ-law 8 kHz bytes, streamed per text piece; cancellable by the caller."""

    info: EngineInfo

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Async stream of μ-law 8 kHz mono chunks (any size) for ``text``."""
        ...


@dataclass(frozen=True, slots=True)
class KbChunk:
    id: str
    text: str
    source: str
    distance: float
    heading: str = ""
    metadata: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class KnowledgeBase(Protocol):
    info: EngineInfo

    def search(self, query: str, k: int) -> list[KbChunk]:
        """Blocking: nearest chunks for ``query``, best first."""
        ...
