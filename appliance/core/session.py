"""One phone call: listening → thinking → speaking, with barge-in.

Data flows one way: frames in → VAD → end of turn → STT → agent (KB + LLM) → sentences → TTS →
frames out. The session owns the reply task; a barge-in cancels it, tells the transport to clear
what the caller has not heard yet, and keeps in the transcript only what was played (marks).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.config import Settings
from appliance.core.agent import DTMF_TOOLS, Agent, Conversation, Reply, Tool
from appliance.core.audio import FRAME_BYTES, TELEPHONE_RATE, frames
from appliance.core.listener import MIN_UTTERANCE_SAMPLES, Listener
from appliance.core.sentences import SentenceChunker
from appliance.core.spoken import AgentTurn, SpokenPiece
from appliance.core.turns import TurnEvent
from appliance.core.workers import Background, Workers, run_in
from appliance.engines.base import EngineInfo, Stt, Transcript, Tts, TurnDetector, Vad
from appliance.messages.delivery import deliver
from appliance.store.calls import CallStore
from appliance.telephony.twilio_media import HOLD_MARK_PREFIX

log = logging.getLogger(__name__)

INBOX_FRAMES = 250  # 5 s of audio; beyond this the caller's frames are dropped, not queued
MARK_WAIT_S = 15.0


class CallTransport(Protocol):
    """How the session talks back to the caller; implemented by the telephony layer."""

    async def send_audio(self, ulaw: bytes) -> None: ...
    async def send_mark(self, name: str) -> None: ...
    async def clear(self) -> None: ...
    async def hang_up(self) -> None: ...
    async def transfer(self, number: str) -> None: ...


class State(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


@dataclass
class Engines:
    """What a session needs from the loaded engines (shared by every call)."""

    vad: Vad
    stt: Stt
    tts: Tts
    agent: Agent
    workers: Workers
    phrases: Mapping[str, bytes]  # pre-synthesized μ-law for fixed phrases
    turn: TurnDetector | None = None  # judges each pause; None: a fixed end-of-turn silence

    @property
    def infos(self) -> list[EngineInfo]:
        engines = [self.vad, self.turn, self.stt, self.agent.llm, self.tts, self.agent.kb]
        return [engine.info for engine in engines if engine is not None]


class CallSession:
    def __init__(self, call_sid: str, settings: Settings, engines: Engines, store: CallStore,
                 transport: CallTransport) -> None:
        self.call_sid = call_sid
        self.settings = settings
        self.engines = engines
        self.store = store
        self.transport = transport
        self.state = State.LISTENING
        self.conversation = Conversation(session_id=call_sid)
        self._listener = Listener(settings, engines.vad, engines.workers.vad, engines.turn,
                                  engines.workers.turn)
        self._pending_audio: list[np.ndarray] = []  # the utterance a running turn answers
        self._early_stt: asyncio.Task[Transcript] | None = None  # started at a pause
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=INBOX_FRAMES)
        self._dropped_frames = 0
        self._turn_idx = 0
        self._reply_task: asyncio.Task[None] | None = None
        self._current: AgentTurn | None = None
        self._mark_waiters: dict[str, asyncio.Future[None]] = {}
        self._outstanding: list[str] = []
        self._mark_numbers = itertools.count(1)
        self._background = Background()
        self._audio_task: asyncio.Task[None] | None = None
        self._ending = False
        self._answered = False  # the current turn's reply has started to play
        self._speaking = asyncio.Lock()  # one piece of audio at a time: never interleave frames

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin listening and greet the caller from the pre-synthesized greeting."""
        self._audio_task = asyncio.create_task(self._audio_loop(), name=f"audio-{self.call_sid}")
        greeting = self.settings.greeting_text
        self._reply_task = asyncio.create_task(self._speak_fixed(greeting, record=True))
        if warm := getattr(self.engines.tts, "warm", None):
            self._spawn(warm())  # a cloud voice opens its connection while the greeting plays

    async def close(self, reason: str, status: str = "completed") -> None:
        """End the call: stop work, record what was heard, close the call record."""
        if self.state is State.ENDED:
            return
        if self._current is not None:
            self._finish_turn(self._current, interrupted=True)
        self.state = State.ENDED
        for task in (self._reply_task, self._audio_task):
            if task and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._reply_task, self._audio_task) if t),
                             return_exceptions=True)
        for waiter in self._mark_waiters.values():
            waiter.cancel()
        await self._background.drain()
        await self.store.call_ended(self.call_sid, status=status, reason=reason)
        log.info("call %s closed: %s", self.call_sid, reason)

    # --- inbound events (called by the transport's receive loop; never block) --------------

    def on_audio(self, ulaw: bytes) -> None:
        try:
            self._inbox.put_nowait(ulaw)
        except asyncio.QueueFull:
            self._dropped_frames += 1
            if self._dropped_frames % 250 == 1:
                log.warning("call %s: audio backlog full, dropped %d frame(s)",
                            self.call_sid, self._dropped_frames)

    def on_mark(self, name: str) -> None:
        turn = self._current
        if name in self._outstanding:
            self._outstanding.remove(name)
        if turn is not None:
            for piece in turn.pieces:
                if piece.mark == name and not piece.played:
                    piece.played = True
                    turn.play_started = time.monotonic()
        if waiter := self._mark_waiters.pop(name, None):
            if not waiter.done():
                waiter.set_result(None)
        idle = self._reply_task is None or self._reply_task.done()
        if not self._outstanding and idle and self.state is State.SPEAKING:
            self.state = State.LISTENING
            if turn is not None:
                self._finish_turn(turn, interrupted=False)

    def on_dtmf(self, digit: str) -> None:
        self._spawn(self.store.add_event(self.call_sid, "dtmf", digit=digit))
        tool = DTMF_TOOLS.get(digit)
        if tool is Tool.TRANSFER and self.engines.agent.can_transfer:
            self._interrupt("dtmf")
            self._reply_task = asyncio.create_task(self._use_tool(tool, record=True))

    # --- listening ------------------------------------------------------------------------

    async def _audio_loop(self) -> None:
        while True:
            for heard in await self._listener.hear(await self._inbox.get()):
                if heard.event is TurnEvent.SPEECH_START:
                    self._on_speech_start()
                elif heard.event is TurnEvent.PAUSE:
                    self._on_pause(heard.audio)
                elif heard.event is TurnEvent.SPEECH_END:
                    self._on_speech_end(heard.audio, heard.silence_s)

    def _on_speech_start(self) -> None:
        if self._early_stt is not None:
            self._early_stt.cancel()
            self._early_stt = None
        if self._ending:
            return
        if self._outstanding or self.state is State.SPEAKING:
            self._interrupt("barge-in")
        elif self.state is State.THINKING and self._reply_task and not self._reply_task.done():
            log.info("call %s: caller kept talking; merging with the previous utterance",
                     self.call_sid)
            self._reply_task.cancel()
            self._listener.carry_over(self._pending_audio)
            self.state = State.LISTENING

    def _on_pause(self, audio: np.ndarray | None) -> None:
        """The caller paused: transcribe now, so if the pause turns out to be the end of the
        turn the words are (nearly) ready. If they speak on, the result is simply dropped."""
        if self._early_stt is not None:
            self._early_stt.cancel()
        self._early_stt = None
        if self._ending or audio is None or audio.size < MIN_UTTERANCE_SAMPLES:
            return
        self._early_stt = asyncio.ensure_future(
            run_in(self.engines.workers.stt, self.engines.stt.transcribe, audio))

    def _on_speech_end(self, audio: np.ndarray | None, silence_s: float) -> None:
        early, self._early_stt = self._early_stt, None
        voice_end = time.monotonic() - silence_s
        if early is not None and silence_s < self._listener.endpointer.config.speculate_s:
            early.cancel()  # a forced end (too long), not this pause: the early words are stale
            early = None
        if self._ending or audio is None or audio.size < MIN_UTTERANCE_SAMPLES:
            if early is not None:
                early.cancel()
            return
        if self._reply_task and not self._reply_task.done():
            self._reply_task.cancel()
        self._pending_audio = [audio]
        self.state = State.THINKING
        self._reply_task = asyncio.create_task(self._turn(audio, voice_end, early),
                                               name=f"turn-{self.call_sid}")

    # --- one turn -------------------------------------------------------------------------

    async def _turn(self, audio: np.ndarray, voice_end: float,
                    early: asyncio.Future[Transcript] | None) -> None:
        metrics: dict[str, Any] = {"endpoint_s": time.monotonic() - voice_end}
        started = time.time()
        self._answered = False
        hold = asyncio.create_task(self._hold_on(voice_end))
        try:
            t0 = time.monotonic()
            if early is None:
                early = asyncio.ensure_future(
                    run_in(self.engines.workers.stt, self.engines.stt.transcribe, audio))
            transcript = await early
            metrics["stt_s"] = time.monotonic() - t0  # what the caller waited for, after the end
            text = transcript.text.strip()
            if not any(ch.isalnum() for ch in text) or transcript.no_speech_prob > 0.8:
                log.info("call %s: no speech in utterance (%r); ignored", self.call_sid, text)
                self.state = State.LISTENING
                return
            self._pending_audio = []
            if self._current is not None:  # the previous answer, before this question
                self._finish_turn(self._current, interrupted=False)
            self._turn_idx += 1
            self._spawn(self.store.add_turn(self.call_sid, idx=self._turn_idx, role="user",
                                            text=text, started=started))
            reply = await self.engines.agent.reply(self.conversation, text)
            self.conversation.add("user", text)
            await self._speak_reply(reply, metrics, voice_end)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one bad turn must not end the call
            log.exception("call %s: turn failed", self.call_sid)
            self._spawn(self.store.add_event(self.call_sid, "error", stage="turn",
                                             reason=f"{type(err).__name__}: {err}"))
            await self._speak_fixed(self.settings.apology, record=False)
        finally:
            hold.cancel()

    async def _hold_on(self, voice_end: float) -> None:
        """If the answer is slow (a loaded box, a cold model), say "one moment" rather than
        leave the caller in silence."""
        if self.settings.hold_after_ms <= 0:
            return
        await asyncio.sleep(max(0.0, voice_end + self.settings.hold_after_ms / 1000
                                - time.monotonic()))
        if not self._answered and self.state is State.THINKING:
            await self._speak_fixed(self.settings.hold_phrase, record=False, hold=True)

    async def _speak_reply(self, reply: Reply, metrics: dict[str, Any], voice_end: float) -> None:
        turn = self._begin_turn()
        turn.metrics = metrics
        turn.kb_chunks = [c.id for c in reply.sources]
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        llm_start = time.monotonic()

        async def produce() -> None:
            chunker = SentenceChunker()
            try:
                async for token in reply.tokens:
                    metrics.setdefault("llm_ttft_s", time.monotonic() - llm_start)
                    turn.text += token
                    for sentence in chunker.push(token):
                        metrics.setdefault("first_sentence_s", time.monotonic() - llm_start)
                        await sentences.put(sentence)
                for sentence in chunker.flush():
                    metrics.setdefault("first_sentence_s", time.monotonic() - llm_start)
                    await sentences.put(sentence)
            finally:
                await sentences.put(None)

        producer = asyncio.create_task(produce())
        spoken_by: list[dict[str, Any]] = []  # per sentence: which voice, how soon
        try:
            while (sentence := await sentences.get()) is not None:
                self._answered = True
                ready = time.monotonic()
                first = await self._speak_text(turn, sentence)
                provider = getattr(self.engines.tts, "last_provider", self.engines.tts.info.name)
                spoken_by.append({"provider": provider, "first_audio_s":
                                  None if first is None else round(first - ready, 3)})
                metrics["tts_sentences"] = json.dumps(spoken_by)
                if first is not None and "tts_first_audio_s" not in metrics:
                    metrics["tts_first_audio_s"] = first - ready
                    metrics["v2v_s"] = first - voice_end
                    metrics["tts_provider"] = provider
            await producer
        finally:
            producer.cancel()
        if reply.guard.replaced:  # counted per call: the model said something ungrounded
            self._spawn(self.store.add_event(self.call_sid, "ungrounded",
                                             reason=reply.guard.replaced))
        if reply.message is not None:
            self._spawn(deliver(self.store, self.settings, self.call_sid, reply.message))
        turn.text = turn.text.strip()
        if not turn.pieces:
            raise RuntimeError("the model produced nothing to say")
        if reply.tool is not None:
            await self._wait_played(turn.pieces[-1].mark)
            self._finish_turn(turn, interrupted=False)
            await self._use_tool(reply.tool, record=False)
        else:
            self._finish_turn(turn, interrupted=False, pending=True)

    async def _speak_text(self, turn: AgentTurn, text: str) -> float | None:
        """Synthesize one sentence, send it as 20 ms frames, then a mark. Returns first-send time."""
        first: float | None = None
        sent = 0
        pending = b""
        async with self._speaking:
            async for chunk in self.engines.tts.synthesize(text):
                pending += chunk
                whole = len(pending) - len(pending) % FRAME_BYTES
                for frame in frames(pending[:whole]):
                    await self._send_frame(frame)
                sent += whole
                pending = pending[whole:]
                if first is None and sent:
                    first = time.monotonic()
            for frame in frames(pending):
                await self._send_frame(frame)
                sent += FRAME_BYTES
            first = first or (time.monotonic() if sent else None)
            if sent:
                await self._send_mark(turn, text, sent / TELEPHONE_RATE)
        return first

    async def _send_frame(self, frame: bytes) -> None:
        if self.state is not State.SPEAKING:
            self.state = State.SPEAKING
        await self.transport.send_audio(frame)

    async def _send_mark(self, turn: AgentTurn, text: str, seconds: float,
                         hold: bool = False) -> None:
        number = next(self._mark_numbers)  # unique: fixed phrases share the turn's idx
        name = f"{HOLD_MARK_PREFIX}{number}" if hold else f"t{turn.idx}-{number}"
        if turn.play_started is None:
            turn.play_started = time.monotonic()
        turn.pieces.append(SpokenPiece(text=text, mark=name, seconds=seconds))
        self._outstanding.append(name)
        await self.transport.send_mark(name)

    async def _speak_fixed(self, text: str, *, record: bool, hold: bool = False) -> None:
        """Play a pre-synthesized phrase (greeting, apology, goodbye): no model in the way.

        A ``hold`` phrase is skipped if the answer started meanwhile, and its mark is named so
        that a listener can tell "please wait" from the end of an answer."""
        audio = self.engines.phrases.get(text)
        turn = self._begin_turn() if record else AgentTurn(idx=self._turn_idx)
        if audio is None:
            log.warning("phrase not pre-synthesized; synthesizing now: %r", text)
            await self._speak_text(turn, text)
        else:
            async with self._speaking:
                if hold and self._answered:
                    return
                for frame in frames(audio):
                    await self._send_frame(frame)
                await self._send_mark(turn, text, len(audio) / TELEPHONE_RATE, hold=hold)
        turn.text = text
        if record:
            self._finish_turn(turn, interrupted=False, pending=True)

    async def _use_tool(self, tool: Tool, *, record: bool) -> None:
        """Say the tool's phrase if not said yet, wait until it was heard, then act."""
        self._ending = True
        self._spawn(self.store.add_event(self.call_sid, "tool", tool=tool.value))
        if record:
            await self._speak_fixed(self.engines.agent.phrase_for(tool), record=True)
            if self._outstanding:
                await self._wait_played(self._outstanding[-1])
        try:
            if tool is Tool.TRANSFER:
                await self.transport.transfer(self.settings.transfer_number)
            else:
                await self.transport.hang_up()
        except Exception as err:
            log.error("call %s: %s failed: %s", self.call_sid, tool.value, err)
            self._spawn(self.store.add_event(self.call_sid, "error", stage=tool.value,
                                             reason=str(err)))
            self._ending = False  # the caller is still there: never leave them in silence
            await self._speak_fixed(self.settings.apology, record=False)

    async def _wait_played(self, mark: str) -> None:
        if mark not in self._outstanding:
            return
        waiter = self._mark_waiters.setdefault(mark, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), MARK_WAIT_S)
        except TimeoutError:
            log.warning("call %s: mark %s never came back", self.call_sid, mark)

    # --- barge-in and bookkeeping ----------------------------------------------------------

    def _interrupt(self, why: str) -> None:
        """Stop talking now: cancel the reply, clear Twilio's buffer, keep what was heard."""
        task, turn = self._reply_task, self._current
        if task and not task.done():
            task.cancel()
        heard = turn.heard_text(time.monotonic()) if turn else ""
        self._outstanding.clear()
        self._spawn(self.transport.clear())
        self._spawn(self.store.add_event(self.call_sid, why, heard=heard))
        if turn is not None:
            self._finish_turn(turn, interrupted=True)
        self.state = State.LISTENING
        log.info("call %s: %s; caller heard %r", self.call_sid, why, heard)

    def _begin_turn(self) -> AgentTurn:
        if self._current is not None:
            self._finish_turn(self._current, interrupted=False)
        self._current = AgentTurn(idx=self._turn_idx)
        return self._current

    def _finish_turn(self, turn: AgentTurn, *, interrupted: bool, pending: bool = False) -> None:
        """Record an assistant turn once: now, or (pending) when its last mark comes back."""
        if pending and self._outstanding:
            return  # finished later by _begin_turn / _interrupt / close with the heard text
        if self._current is turn:
            self._current = None
        if not turn.text and not turn.pieces:
            return
        heard = turn.heard_text(time.monotonic()) if interrupted else turn.text
        self.conversation.add("assistant", heard)  # the model remembers what the caller heard
        self._record_turn(turn, heard, interrupted)

    def _record_turn(self, turn: AgentTurn, heard: str, interrupted: bool) -> None:
        self._spawn(self.store.add_assistant_turn(
            self.call_sid, idx=turn.idx, text=turn.text, heard_text=heard, started=turn.started,
            interrupted=interrupted, kb_chunks=turn.kb_chunks, metrics=turn.metrics))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        self._background.spawn(coro)


SessionFactory = Callable[[str, CallTransport], CallSession]
