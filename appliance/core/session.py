"""One phone call: listening → thinking → speaking, with barge-in.

Data flows one way: frames in → VAD → end of turn → STT → agent (KB + LLM) → sentences → TTS →
frames out. The session owns the reply task and decides what happens when; the pieces it
directs each have their own module: the :class:`Listener` (frames → turn-taking moments), the
:class:`Speaker` (a reply as it is produced, fixed phrases, the hold phrase), the
:class:`Playout` (20 ms frames, marks, what the caller heard) and the :class:`CallRecorder`
(the call log). A barge-in cancels the reply, tells the transport to drop what the caller has
not heard yet, and keeps in the transcript only what was played. A key press ('0': transfer)
also stops the agent talking; while a call-back number is keyed for a message its digits
collect until '#' or a pause on the session clock, then the number is read back as a turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from appliance.config import Settings
from appliance.core.agent import Agent, KeyPress, Reply, Tool
from appliance.core.audio import MODEL_RATE
from appliance.core.call_audio import CallTape, TapedTransport
from appliance.core.clock import MONOTONIC, Clock
from appliance.core.events import ErrorCode, EventSink, StageError, StageEventType, stage
from appliance.core.listener import MIN_UTTERANCE_SAMPLES, Listener
from appliance.core.live import CallState as State
from appliance.core.live import LiveFeed
from appliance.core.playout import CallTransport, Playout
from appliance.core.recorder import CallRecorder
from appliance.core.redaction import redactor
from appliance.core.share import AudioShare
from appliance.core.speaking import Speaker
from appliance.core.speculation import Speculation, said
from appliance.core.spoken import AgentTurn
from appliance.core.turns import TurnEvent
from appliance.core.workers import OneAtATime, Ticket, Workers, ranked
from appliance.engines.base import (
    CallStore,
    EngineInfo,
    KnowledgeBase,
    Llm,
    Stt,
    Transcript,
    Tts,
    TurnDetector,
    Vad,
    Warmable,
)
from appliance.store.metrics import TurnMetrics

log = logging.getLogger(__name__)

INBOX_FRAMES = 250  # 5 s of audio; beyond this the caller's frames are dropped, not queued
LISTENER_RESTARTS = 3  # a listener that keeps dying ends the call (after the apology)
NO_SPEECH_PROB = 0.8  # Whisper's own doubt above which an utterance is taken for noise
# A call's share of transcription (see core/share.py): 2 s of audio a second of call, 30 s of
# burst (a maximal 20 s utterance re-transcribed once). The endless talker asked for 13 s a second.
STT_RATE = 2.0
STT_BURST_S = 30.0
# Answers in a row the caller talks over (or speaks on before) until the session waits for a
# longer pause before answering; an answer heard to the end puts it back (see _spoke_over).
TALKED_OVER = 3


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
        engines: list[Vad | TurnDetector | Stt | Llm | Tts | KnowledgeBase | None] = [
            self.vad, self.turn, self.stt, self.agent.llm, self.tts, self.agent.kb]
        return [engine.info for engine in engines if engine is not None]


class CallSession:
    def __init__(self, call_sid: str, settings: Settings, engines: Engines, store: CallStore,
                 transport: CallTransport, *, clock: Clock = MONOTONIC,
                 events: EventSink | None = None, tape: CallTape | None = None,
                 live: LiveFeed | None = None) -> None:
        self.call_sid = call_sid
        self.settings = settings
        self.engines = engines
        self.tape = tape  # the call's recording, when recordings are on
        self.transport: CallTransport = (transport if tape is None
                                         else TapedTransport(transport, tape))
        self.clock = clock
        self._state = State.LISTENING
        self.recorder = CallRecorder(call_sid, store, clock, events,
                                     history_turns=settings.history_turns,
                                     redact=redactor(settings), live=live,
                                     mode="media-streams")
        self.playout = Playout(self.transport, clock, on_audio=self._on_audio_out)
        self.speaker = Speaker(engines.tts, engines.phrases, self.playout, self.recorder, clock)
        self._listener = self._new_listener()
        self._stt = OneAtATime(engines.workers.stt)  # one job of this call in the STT pool...
        self.stt_share = AudioShare(clock, STT_RATE, STT_BURST_S)  # ...and its share over time
        self._listener_deaths = 0
        self._talked_over = 0  # answers in a row the caller spoke over (see _spoke_over)
        self._pending_audio: list[np.ndarray] = []  # the utterance a running turn answers
        self._early: Speculation | None = None  # words and answer, started at a pause
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=INBOX_FRAMES)
        self._dropped_frames = 0
        self._reply_task: asyncio.Task[None] | None = None
        self._audio_task: asyncio.Task[None] | None = None
        self._key_timer: asyncio.Task[None] | None = None  # ends a keyed number at a pause
        self._ending = False

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self.recorder.state(state)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin listening and greet the caller from the pre-synthesized greeting."""
        self._listen()
        self._reply_task = asyncio.create_task(self._say(self.settings.greeting_text, record=True))
        if isinstance(self.engines.tts, Warmable):
            self.recorder.spawn(self.engines.tts.warm())  # a cloud voice connects meanwhile

    async def close(self, reason: str, status: str = "completed") -> None:
        """End the call: stop work, record what was heard, close the call record."""
        if self.state is State.ENDED:
            return
        if (turn := self.recorder.current) is not None:
            self.recorder.finish(turn, interrupted=True, heard=turn.heard_text(self.clock.now()))
        self.state = State.ENDED
        tasks = [t for t in (self._reply_task, self._audio_task, self._key_timer)
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.playout.close()
        if self.tape is not None:
            try:
                seconds = await self.tape.close()
            except Exception:  # the recording's loss, never the call record's
                log.exception("call %s: the recording did not close", self.call_sid)
            else:
                self.recorder.spawn(self.recorder.store.update_call(
                    self.call_sid, recording_s=round(seconds, 2)))
        await self.recorder.close(status=status, reason=reason)

    # --- operator actions (the console) -----------------------------------------------------

    async def hang_up(self) -> None:
        await self.transport.hang_up()

    async def transfer(self, number: str) -> None:
        await self.transport.transfer(number)

    # --- inbound events (called by the transport's receive loop; never block) --------------

    def on_audio(self, ulaw: bytes, timestamp_ms: int | None = None) -> None:
        """A caller frame; ``timestamp_ms`` (Twilio's, from the stream's start) places it in
        the recording."""
        if self.tape is not None:
            self.tape.caller(ulaw, timestamp_ms)
        try:
            self._inbox.put_nowait(ulaw)
        except asyncio.QueueFull:
            self._dropped_frames += 1
            if self._dropped_frames % 250 == 1:
                log.warning("call %s: audio backlog full, dropped %d frame(s)",
                            self.call_sid, self._dropped_frames)

    def on_mark(self, name: str) -> None:
        turn = self.recorder.current
        self.playout.on_mark(name, turn)
        idle = self._reply_task is None or self._reply_task.done()
        if not self.playout.playing and idle and self.state is State.SPEAKING:
            self.state = State.LISTENING
            if turn is not None:
                self.recorder.finish(turn, interrupted=False)
                self._heard_out()

    def on_dtmf(self, digit: str) -> None:
        self.recorder.event("dtmf", digit=digit)
        # One tool at a time: "0" pressed again while a transfer dials must not dial twice.
        if self._ending:
            return
        press = self.engines.agent.press(self.recorder.conversation, digit, self.clock.now())
        if press.tool is not None:
            self._interrupt("dtmf")
            self._reply_task = asyncio.create_task(self._use_tool(press.tool, record=True))
            return
        if press.wait_s is not None:
            self._stop_talking()  # keying over the question: it was understood
        self._on_keys(press)

    def _on_keys(self, press: KeyPress) -> None:
        """A keyed number ended (say so) or goes on (wait for the pause that would end it)."""
        if self._key_timer is not None:
            self._key_timer.cancel()
            self._key_timer = None
        if press.keyed is not None:
            self._stop_talking()
            self._reply_task = asyncio.create_task(self._say_keyed(press.keyed.keys,
                                                                   press.keyed.said))
        elif press.wait_s is not None:
            self._key_timer = asyncio.create_task(self._keys_pause(press.wait_s))

    def _stop_talking(self) -> None:
        if self.playout.playing or (self._reply_task is not None and not self._reply_task.done()):
            self._interrupt("dtmf")

    async def _keys_pause(self, wait_s: float) -> None:
        await self.clock.sleep(wait_s)
        self._key_timer = None
        if not self._ending:
            self._on_keys(self.engines.agent.key_pause(self.recorder.conversation,
                                                       self.clock.now()))

    async def _say_keyed(self, keys: str, said: str) -> None:
        """The keys as the caller's turn, the read-back as the assistant's."""
        self.recorder.user(f"keyed {keys}", time.time())
        self.recorder.conversation.add("user", f"keyed {keys}")
        turn = self.recorder.begin(metrics=TurnMetrics())
        await self.speaker.reply(turn, Reply.saying(said), self.clock.now())
        self._settle(turn)

    # --- listening ------------------------------------------------------------------------

    def _new_listener(self) -> Listener:
        engines = self.engines
        return Listener(self.settings, engines.vad, engines.workers.vad, engines.turn,
                        engines.workers.turn)

    def _listen(self) -> None:
        self._audio_task = asyncio.create_task(self._audio_loop(), name=f"audio-{self.call_sid}")
        self._audio_task.add_done_callback(self._listener_died)

    def _listener_died(self, task: asyncio.Task[None]) -> None:
        """The audio loop ended by an error: log why, apologise (never leave the caller in
        silence) and listen again with fresh state; one that keeps dying ends the call."""
        if task.cancelled() or self.state is State.ENDED:
            return
        if not isinstance(err := task.exception(), Exception):
            return
        self._listener_deaths += 1
        self.recorder.failed("listener", StageError.of(err))
        if self._reply_task and not self._reply_task.done():
            self._reply_task.cancel()
        self.state = State.LISTENING
        give_up = self._listener_deaths > LISTENER_RESTARTS
        self._reply_task = asyncio.create_task(self._apologise(hang_up=give_up))
        if not give_up:
            self._listener = self._new_listener()
            self._listen()

    async def _apologise(self, *, hang_up: bool) -> None:
        await self._say(self.settings.apology, record=False)
        if hang_up:
            log.error("call %s: the listener keeps failing; ending the call", self.call_sid)
            self._ending = True
            await self.playout.wait_played(self.playout.last_mark)
            await self.transport.hang_up()

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
        self._drop_early()
        if self._ending:
            return
        if self.playout.playing or self.state is State.SPEAKING:
            self._interrupt("barge-in")
            self._spoke_over()
        elif self.state is State.THINKING and self._reply_task and not self._reply_task.done():
            log.info("call %s: caller kept talking; merging with the previous utterance",
                     self.call_sid)
            self._reply_task.cancel()
            self._listener.carry_over(self._pending_audio)
            self.state = State.LISTENING
            self._spoke_over()

    def _spoke_over(self) -> None:
        """The caller talked over an answer, or spoke on before it came. After
        :data:`TALKED_OVER` in a row the session stops answering at every breath: turns end
        only after the longest silence, without the turn model, and nothing is worked out at
        pauses. A caller who never stops talking (a radio held to the phone; the bench's
        endless talker, 0.3 s between sentences) otherwise had a whole turn — transcription,
        search, speech — started and thrown away every 1.8 s: server CPU 52 → 71 % of a core
        beside four calls, 51 → 61 % with this (`appliance bench --calls 4 --turns 12
        --talker`); over 5 minutes, with two Whisper replicas too, the four calls' STT p95 was
        ×1.08 of the same run without the talker (×1.56 before)."""
        self._talked_over += 1
        if self._talked_over >= TALKED_OVER and not self._listener.patient:
            log.info("call %s: the caller talked over %d answers in a row; waiting for a "
                     "longer pause before answering", self.call_sid, TALKED_OVER)
            self.recorder.event("patient", talked_over=TALKED_OVER)
            self._listener.be_patient(True)

    def _heard_out(self) -> None:
        """An answer played to the end: the usual turn-taking again."""
        if self._talked_over:
            self._talked_over = 0
            self._listener.be_patient(False)

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.drop()
            self._early = None

    def _on_pause(self, audio: np.ndarray | None) -> None:
        """The caller paused: transcribe and work out the answer now (core/speculation.py), so
        if the pause turns out to be the end of the turn the answer is (nearly) ready. If they
        speak on, all of it is dropped."""
        self._drop_early()
        if (self._ending or self._listener.patient or audio is None
                or audio.size < MIN_UTTERANCE_SAMPLES):
            return
        ticket = Ticket(self.clock.now(), speculative=True)  # behind every confirmed turn
        self._early = Speculation(self._transcribe(audio, ticket), ticket, self.engines.agent,
                                  self.engines.tts, self.recorder.conversation, NO_SPEECH_PROB)

    def _on_speech_end(self, audio: np.ndarray | None, silence_s: float) -> None:
        early, self._early = self._early, None
        voice_end = self.clock.now() - silence_s
        if early is not None and silence_s < self._listener.endpointer.config.speculate_s:
            early.drop()  # a forced end (too long), not this pause: the early words are stale
            early = None
        if self._ending or audio is None or audio.size < MIN_UTTERANCE_SAMPLES:
            if early is not None:
                early.drop()
            return
        if self._reply_task and not self._reply_task.done():
            self._reply_task.cancel()
        self._pending_audio = [audio]
        self.state = State.THINKING
        # This turn's work, early or not, now waits in the shared pools as confirmed, ranked by
        # how long this caller has waited.
        ticket = early.ticket if early is not None else Ticket(voice_end)
        ticket.confirm(voice_end)
        self._reply_task = ranked(ticket, self._turn(audio, voice_end, early),
                                  name=f"turn-{self.call_sid}")

    def _transcribe(self, audio: np.ndarray, early: Ticket | None = None
                    ) -> asyncio.Future[Transcript]:
        """Transcribe ``audio``: in the turn's task, or ``early`` (at a pause) with its ticket."""
        self.recorder.stage(StageEventType.STT_START, early=early is not None)
        words = self._transcribe_in_share(audio)
        return ranked(early, words) if early is not None else asyncio.ensure_future(words)

    async def _transcribe_in_share(self, audio: np.ndarray) -> Transcript:
        """Transcribe once this call is within its share of STT time; a request cancelled
        while it waits (the caller spoke on) never reaches the pool."""
        await self.stt_share.take(audio.size / MODEL_RATE)
        return await self._stt.run(self.engines.stt.transcribe, audio)

    # --- one turn -------------------------------------------------------------------------

    async def _turn(self, audio: np.ndarray, voice_end: float,
                    early: Speculation | None) -> None:
        metrics = TurnMetrics(endpoint_s=self.recorder.stage(StageEventType.TURN_START)
                              - voice_end)
        started = time.time()
        self.speaker.answered = False
        hold = self._hold(voice_end)
        try:
            asked = self.clock.now()
            words = early.words if early is not None else self._transcribe(audio)
            with stage(ErrorCode.STT_FAILED):
                transcript = await words
            # what the caller waited for, after the end of their turn
            heard = self.recorder.stage(StageEventType.STT_END, text=transcript.text.strip())
            metrics.stt_s = heard - asked
            if (text := said(transcript, NO_SPEECH_PROB)) is None:
                log.info("call %s: no speech in utterance (%r); ignored", self.call_sid,
                         transcript.text)
                self.state = State.LISTENING
                return
            self._pending_audio = []
            if (previous := self.recorder.current) is not None:  # the answer before this question
                self.recorder.finish(previous, interrupted=False)
            self.recorder.user(text, started)
            conversation = self.recorder.conversation
            with stage(ErrorCode.RETRIEVAL_FAILED):
                reply = await early.answer_for(conversation, text) if early is not None else None
                metrics.speculative = reply is not None
                if reply is None:
                    reply = await self.engines.agent.reply(conversation, text)
            # the search's own time, or (worked out early) only what was left of it
            metrics.retrieval_s = (self.clock.now() - heard if metrics.speculative
                                   else reply.retrieval_s)
            self.recorder.stage(StageEventType.RETRIEVAL_END, tool=reply.tool,
                                early=metrics.speculative)
            self.recorder.conversation.add("user", text)
            turn = self.recorder.begin(metrics=metrics, kb_chunks=[c.id for c in reply.sources])
            await self.speaker.reply(turn, reply, voice_end,
                                     early.ahead if early is not None and metrics.speculative
                                     else None)
            self.recorder.replied(reply, self.settings)
            self.recorder.stage(StageEventType.TURN_END)
            if reply.tool is None:
                self._settle(turn)
            else:
                await self.playout.wait_played(turn.pieces[-1].mark)
                self.recorder.finish(turn, interrupted=False)
                await self._use_tool(reply.tool, record=False)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one bad turn must not end the call
            self.recorder.failed("turn", StageError.of(err))
            await self._say(self.settings.apology, record=False)
        finally:
            if hold is not None:
                hold.cancel()
            if early is not None:
                early.drop()  # what it did not use stops: the model, the early voice

    def _hold(self, voice_end: float) -> asyncio.Task[None] | None:
        """"One moment, please" if no answer has started ``hold_after_ms`` after the caller
        stopped talking."""
        if self.settings.hold_after_ms <= 0:
            return None
        return asyncio.create_task(self.speaker.hold_on(
            self.settings.hold_phrase, voice_end + self.settings.hold_after_ms / 1000,
            AgentTurn(idx=self.recorder.idx), waiting=lambda: self.state is State.THINKING))

    async def _say(self, text: str, *, record: bool) -> None:
        """A fixed phrase; ``record``: as an assistant turn of its own (greeting, tool phrase)."""
        turn = self.recorder.begin() if record else AgentTurn(idx=self.recorder.idx)
        await self.speaker.say(turn, text)
        if record:
            self._settle(turn)

    def _settle(self, turn: AgentTurn) -> None:
        """Record ``turn`` now if the caller heard it all; else its last mark, a barge-in, the
        next turn or the close records it, with what was heard by then."""
        if not self.playout.playing:
            self.recorder.finish(turn, interrupted=False)
            self._heard_out()

    async def _use_tool(self, tool: Tool, *, record: bool) -> None:
        """Say the tool's phrase if not said yet, wait until it was heard, then act."""
        self._ending = True
        self.recorder.event("tool", tool=tool.value)
        if record:
            await self._say(self.engines.agent.phrase_for(tool), record=True)
            await self.playout.wait_played(self.playout.last_mark)
        try:
            with stage(ErrorCode.TOOL_FAILED):
                if tool is Tool.TRANSFER:
                    await self.transport.transfer(self.settings.transfer_number)
                else:
                    await self.transport.hang_up()
        except StageError as err:
            self.recorder.failed(tool.value, err)
            self._ending = False  # the caller is still there: never leave them in silence
            await self._say(self.settings.apology, record=False)

    # --- barge-in ---------------------------------------------------------------------------

    def _interrupt(self, why: str) -> None:
        """Stop talking now: cancel the reply, clear Twilio's buffer, keep what was heard."""
        task, turn = self._reply_task, self.recorder.current
        if task and not task.done():
            task.cancel()
        heard = turn.heard_text(self.clock.now()) if turn else ""
        self.playout.clear()
        self.recorder.spawn(self.transport.clear())
        self.recorder.event(why, heard=heard)
        if turn is not None:
            self.recorder.finish(turn, interrupted=True, heard=heard)
        self.state = State.LISTENING
        log.info("call %s: %s; caller heard %r", self.call_sid, why, heard)

    def _on_audio_out(self) -> None:
        if self.state is not State.SPEAKING:
            self.state = State.SPEAKING
