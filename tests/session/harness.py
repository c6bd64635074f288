"""Drive a session directly: a fake transport, an in-memory call log and a clock the test moves.

No server, socket or database: the test feeds the caller's frames and marks into the session,
reads what it sent back, and advances time by hand (as LiveKit Agents' fake session does), so
every check is about order and arithmetic, never about how fast a busy machine runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.config import Settings
from appliance.core.agent import Agent
from appliance.core.audio import FRAME_BYTES, frames, pcm16_to_ulaw8k
from appliance.core.events import StageEvent, StageEventType
from appliance.core.playout import HOLD_MARK_PREFIX
from appliance.core.session import CallSession, Engines
from appliance.core.workers import Workers
from appliance.engines.base import ChatMessage, PromptUsage, Transcript
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts, FakeVad
from appliance.store.metrics import TurnMetrics
from appliance.wiring import fixed_phrases, synthesize_phrases

SILENCE = b"\xff" * FRAME_BYTES
QUESTION = "What time do you open tomorrow?"


def tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw8k((9000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 8000)


async def until(condition: Callable[[], object], what: str = "") -> None:
    """Let the session work until ``condition`` holds (a hang guard, not a speed check)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.002)


class FakeClock:
    """Monotonic time that moves only when the test says so; sleepers wake when it passes."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        entry = (self.t + seconds, wake)
        self._sleepers.append(entry)
        try:
            await wake
        finally:
            self._sleepers.remove(entry)

    @property
    def sleeping(self) -> int:
        """How many timers wait on this clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for at, wake in self._sleepers:
            if at <= self.t and not wake.done():
                wake.set_result(None)


class FakeTransport:
    """Records what the session sends, in order: ("audio", n bytes), ("mark", name), ..."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.fail_transfer: Exception | None = None

    async def send_audio(self, ulaw: bytes) -> None:
        self.sent.append(("audio", len(ulaw)))

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))

    async def clear(self) -> None:
        self.sent.append(("clear", None))

    async def hang_up(self) -> None:
        self.sent.append(("hang_up", None))

    async def transfer(self, number: str) -> None:
        if self.fail_transfer is not None:
            raise self.fail_transfer
        self.sent.append(("transfer", number))

    def marks(self) -> list[str]:
        return [value for kind, value in self.sent if kind == "mark"]

    def answer_marks(self) -> list[str]:
        return [m for m in self.marks() if not m.startswith(HOLD_MARK_PREFIX)]


@dataclass
class MemoryStore:
    """The call log (``engines.base.CallStore``) in memory."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)  # messages callers left
    ended: dict[str, Any] | None = None

    async def open(self) -> int:
        return 0

    async def close(self) -> None:
        return None

    async def call_started(self, call_sid: str, *, mode: str, from_number: str = "",
                           to_number: str = "", status: str = "ringing") -> None:
        return None

    async def update_call(self, call_sid: str, **fields: Any) -> None:
        return None

    async def call_ended(self, call_sid: str, *, status: str, reason: str) -> None:
        self.ended = {"status": status, "reason": reason}

    async def add_turn(self, call_sid: str, *, idx: int, role: str, text: str,
                       started: float, ended: float | None = None, heard_text: str | None = None,
                       interrupted: bool = False, kb_chunks: list[str] | None = None) -> int:
        self.turns.append({"idx": idx, "role": role, "text": text, "heard_text": heard_text,
                           "interrupted": interrupted, "metrics": None})
        return len(self.turns)

    async def add_assistant_turn(self, call_sid: str, *, idx: int, text: str, heard_text: str,
                                 started: float, interrupted: bool, kb_chunks: list[str],
                                 metrics: TurnMetrics | None) -> None:
        await self.add_turn(call_sid, idx=idx, role="assistant", text=text,
                            heard_text=heard_text, started=started, interrupted=interrupted)
        self.turns[-1]["metrics"] = metrics

    async def add_event(self, call_sid: str, type_: str, **detail: Any) -> None:
        self.events.append({"type": type_, **detail})

    async def add_message(self, call_sid: str, *, name: str, callback_number: str,
                          message: str) -> dict[str, Any] | None:
        row = {"id": len(self.left) + 1, "call_sid": call_sid, "name": name,
               "callback_number": callback_number, "message": message, "delivered": 0,
               "delivery_error": ""}
        self.left.append(row)
        return row

    async def message_delivered(self, message_id: int, error: str = "") -> None:
        self.left[message_id - 1].update(delivered=int(not error), delivery_error=error)

    async def messages(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.left[::-1][:limit]

    async def call_record(self, call_sid: str) -> dict[str, Any] | None:
        return {"turns": self.turns, "events": self.events}


class GatedStt(FakeStt):
    """Transcribes only once the test opens the gate (a worker thread waits on it)."""

    def __init__(self, texts: Sequence[str] = (QUESTION,)) -> None:
        super().__init__(texts)
        self.gate = threading.Event()

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        self.gate.wait(30)
        return super().transcribe(audio16k)


class GatedLlm(FakeLlm):
    """Produces its first token only once the test opens the gate."""

    def __init__(self, tokens: Sequence[str]) -> None:
        super().__init__(tokens)
        self.gate = threading.Event()

    def stream_chat(self, messages: Sequence[ChatMessage], *, max_tokens: int,
                    temperature: float, session_id: str = "",
                    usage: PromptUsage | None = None) -> Generator[str, None, None]:
        def gated() -> Generator[str, None, None]:
            self.gate.wait(30)
            yield from super(GatedLlm, self).stream_chat(
                messages, max_tokens=max_tokens, temperature=temperature, session_id=session_id,
                usage=usage)
        return gated()


class Call:
    """One session under test, with everything it touches in reach."""

    def __init__(self, session: CallSession, transport: FakeTransport, store: MemoryStore,
                 clock: FakeClock, events: list[StageEvent]) -> None:
        self.session, self.transport, self.store = session, transport, store
        self.clock, self.events = clock, events

    def say(self, audio: bytes) -> None:
        for frame in frames(audio):
            self.session.on_audio(frame)

    def ack(self, *names: str) -> None:
        """Twilio played up to these marks (all sent so far if none named)."""
        for name in names or tuple(self.transport.marks()):
            self.session.on_mark(name)

    def types(self) -> list[StageEventType]:
        return [event.type for event in self.events]

    def first(self, kind: StageEventType) -> StageEvent:
        return next(event for event in self.events if event.type is kind)

    async def until(self, condition: Callable[[], object], what: str = "") -> None:
        await until(condition, f"{what}; sent {self.transport.sent[-8:]}")

    async def end(self) -> None:
        await self.session.close("test over")
        self.session.engines.workers.shutdown()

    async def greeted(self) -> None:
        await self.until(lambda: self.transport.marks(), "greeting")
        self.ack()
        await self.until(lambda: self.store.turns, "greeting recorded")

    async def ask(self, audio: bytes | None = None) -> None:
        """Speak an utterance and the silence that ends it."""
        self.say((audio or tone(0.8)) + SILENCE * 30)


async def start_call(settings: Settings, *, stt: FakeStt | None = None, llm: FakeLlm | None = None,
                     tts: FakeTts | None = None, vad: FakeVad | None = None,
                     workers: Workers | None = None) -> Call:
    workers = workers or Workers.sized(1, 1)
    tts = tts or FakeTts(ms=400, chunk_ms=100)
    agent = Agent(settings, llm or FakeLlm(["We open", " at nine.", " See you", " then."]), None,
                  workers)
    phrases = await synthesize_phrases(tts, fixed_phrases(settings, agent))
    engines = Engines(vad=vad or FakeVad(), stt=stt or FakeStt([QUESTION]), tts=tts, agent=agent,
                      workers=workers, phrases=phrases)
    transport, store, clock = FakeTransport(), MemoryStore(), FakeClock()
    events: list[StageEvent] = []
    session = CallSession("CAtest", settings, engines, store, transport, clock=clock,
                          events=events.append)
    await session.start()
    return Call(session, transport, store, clock, events)
