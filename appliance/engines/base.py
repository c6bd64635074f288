"""The small interfaces every engine implements, so each can be swapped or faked.

Blocking engines (VAD, STT, LLM, embeddings) expose synchronous methods that callers run in a
worker thread; TTS is natively async because it streams audio and may talk to the network.
Optional abilities (a voice that warms a connection, caches phrases, reports who spoke) are
Protocols of their own, checked with ``isinstance``. The call log is an interface here too:
SQLite today, PostgreSQL for several servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from appliance.engines.breaker import CircuitBreaker
from appliance.store.metrics import TurnMetrics


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


class Stt(Protocol):
    info: EngineInfo

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        """Blocking: run in a worker. Consumes any lazy generator before returning."""
        ...


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call instead of answering (no arguments: call control)."""

    name: str
    description: str

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry (llama.cpp's chat handlers read the same shape)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {}}}}


@dataclass(slots=True)
class PromptUsage:
    """How one reply's prompt was read, filled by the engine before its first token.

    Passed in by the caller (the stream itself yields only text): the engine runs in a worker
    thread, and the session copies this into the turn's metrics once the stream is done. None
    where the engine cannot tell (a server that reports no usage).
    """

    tokens: int | None = None  # the whole prompt
    reused: int | None = None  # its prefix already in the model's cache (not read again)
    evaluated: int | None = None  # read this time: tokens - reused
    eval_s: float | None = None  # reading them (prompt evaluation), before the first token
    threads: int | None = None  # threads that read them (in-process only)

    def fill(self, metrics: TurnMetrics) -> None:
        metrics.prompt_tokens, metrics.prompt_reused = self.tokens, self.reused
        metrics.prompt_evaluated, metrics.prompt_eval_s = self.evaluated, self.eval_s
        metrics.prompt_threads = self.threads


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str = "{}"  # JSON text, as the model wrote it


class Llm(Protocol):
    info: EngineInfo
    # Declared by the model preset or a setting, never probed: whether ``choose_tool`` asks a
    # model whose chat format does function calling. False: the rule-based intents decide.
    tool_calling: bool

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
        usage: PromptUsage | None = None,
    ) -> Generator[str, None, None]:
        """Blocking token stream: iterate it in a worker. Closing the generator stops generation.

        ``session_id`` lets a pool of model instances route a conversation back to the instance
        that already holds its prompt prefix in cache. ``usage``, if given, is filled with how
        the prompt was read (as soon as the engine knows: before the first token in-process,
        at the end of the stream from a server).
        """
        ...

    def choose_tool(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *,
                    session_id: str = "") -> ToolCall | None:
        """Blocking: the tool the model calls for this turn, or None when it would answer.
        Only called when ``tool_calling`` is declared; an error means the rules decide."""
        ...


class Tts(Protocol):
    """Speech out as μ-law 8 kHz bytes, streamed per text piece; cancellable by the caller."""

    info: EngineInfo

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Async stream of μ-law 8 kHz mono chunks (any size) for ``text``."""
        ...


@runtime_checkable
class Warmable(Protocol):
    """A voice that can open its connection ahead of the first sentence (while a greeting plays)."""

    async def warm(self) -> None: ...


@runtime_checkable
class PhraseCache(Protocol):
    """A voice that synthesizes fixed phrases itself (per voice, for failover)."""

    async def prewarm(self, texts: Iterable[str]) -> Mapping[str, bytes]: ...


@runtime_checkable
class NamesSpeaker(Protocol):
    """A voice made of several providers that says which one spoke this task's last sentence."""

    @property
    def last_provider(self) -> str: ...


@runtime_checkable
class FailsOver(Protocol):
    """A remote primary with a local fall-back behind a circuit breaker (``/metrics``)."""

    @property
    def breaker(self) -> CircuitBreaker: ...


@runtime_checkable
class Closable(Protocol):
    """An engine holding a connection to close at shut-down."""

    async def aclose(self) -> None: ...


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


class CallStore(Protocol):
    """The call log: calls, their turns with metrics, and events. Every write survives a failing
    disk (logged, never raised into a call); all methods are coroutines."""

    async def open(self) -> int:
        """Create or migrate; mark calls a crash left open as abandoned (returns how many)."""
        ...

    async def close(self) -> None: ...

    async def call_started(self, call_sid: str, *, mode: str, from_number: str = "",
                           to_number: str = "", status: str = "ringing") -> None: ...

    async def update_call(self, call_sid: str, **fields: Any) -> None: ...

    async def call_ended(self, call_sid: str, *, status: str, reason: str) -> None: ...

    async def add_turn(self, call_sid: str, *, idx: int, role: str, text: str,
                       started: float, ended: float | None = None, heard_text: str | None = None,
                       interrupted: bool = False,
                       kb_chunks: list[str] | None = None) -> int | None: ...

    async def add_assistant_turn(self, call_sid: str, *, idx: int, text: str, heard_text: str,
                                 started: float, interrupted: bool, kb_chunks: list[str],
                                 metrics: TurnMetrics | None) -> None: ...

    async def add_event(self, call_sid: str, type_: str, **detail: Any) -> None: ...

    async def add_message(self, call_sid: str, *, name: str, callback_number: str,
                          message: str) -> dict[str, Any] | None:
        """Store a caller's message; an empty ``callback_number`` becomes the caller ID."""
        ...

    async def message_delivered(self, message_id: int, error: str = "") -> None: ...

    async def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest messages first."""
        ...

    async def call_record(self, call_sid: str) -> dict[str, Any] | None:
        """The call, its turns (with metrics) and events, as plain JSON-able data."""
        ...
