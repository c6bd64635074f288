"""One ConversationRelay call: Twilio hears and speaks, the same Agent decides what to say.

Twilio sends the caller's words as text; each final prompt runs one ``Agent.reply`` and its
tokens go back as they are produced. The bookkeeping is the Media Streams session's own
:class:`CallRecorder`: one user and one assistant turn per exchange, metrics per assistant turn,
events for DTMF, interruptions, tools and errors, and only what the caller heard in
``heard_text``.

Prompts that arrive while a reply is being produced (one reply runs at a time):

* nothing of the reply has gone out yet: the caller simply kept talking, so the reply is
  cancelled and restarted once for both utterances together (one user turn). At most
  ``MAX_RESTARTS`` times per turn, so a flood cannot keep the shared LLM busy with replies
  that are thrown away;
* otherwise (tokens are out and Twilio did not interrupt) the prompt waits; prompts that pile up
  are joined into one and answered as one turn when the reply is done. Waiting text is capped at
  ``MAX_PENDING_CHARS``; beyond that prompts are dropped with a warning.

Keys (``dtmf``) go to the agent: '0' transfers, except while a call-back number is being keyed
for a message; then digits collect until '#' or a pause on the session clock, and the read-back
is an exchange of its own (the keys as the user turn).

An ``interrupt`` cancels the running reply (never a hand-off phrase: once a tool is chosen the
call ends); what it answered, if nothing was sent, waits to be joined with the next prompt. An
assistant turn is recorded when the next exchange starts, when it is interrupted (heard =
``utteranceUntilInterrupt``), or when the call ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from appliance.config import Settings
from appliance.core.agent import Agent, KeyPress, Reply, Tool
from appliance.core.clock import MONOTONIC, Clock
from appliance.core.events import ErrorCode, EventSink, StageError, StageEventType, stage
from appliance.core.live import CallState, LiveFeed
from appliance.core.recorder import CallRecorder
from appliance.core.redaction import redactor
from appliance.core.sentences import SentenceChunker
from appliance.core.spoken import AgentTurn
from appliance.engines.base import CallStore
from appliance.store.metrics import TurnMetrics

log = logging.getLogger(__name__)

MAX_RESTARTS = 2
MAX_PENDING_CHARS = 1000
SPOKEN_WORDS_PER_S = 2.5  # to let Twilio finish the goodbye before `end` cuts the session
MAX_END_WAIT_S = 6.0


class RelayTransport(Protocol):
    """How the session talks back to Twilio; implemented by the web layer."""

    async def send_text(self, token: str, last: bool) -> None: ...

    async def end(self, tool: Tool, call_sid: str) -> None:
        """End the session, handing the call back to Twilio to carry out ``tool``."""
        ...


@dataclass
class _Exchange:
    """One reply being produced: the caller's words it answers and, once sent, its turn."""

    text: str
    heard_at: float  # session clock: arrival of the caller's last prompt in ``text``
    started: float  # wall clock, for the user turn
    tool: Tool | None = None
    keyed: tuple[str, str] | None = None  # (keys pressed, what to say): a keyed number ended
    turn: AgentTurn | None = None


class RelaySession:
    def __init__(self, call_sid: str, settings: Settings, agent: Agent, store: CallStore,
                 transport: RelayTransport, *, clock: Clock = MONOTONIC,
                 events: EventSink | None = None, live: LiveFeed | None = None) -> None:
        self.call_sid = call_sid
        self.settings = settings
        self.agent = agent
        self.transport = transport
        self.clock = clock
        self.recorder = CallRecorder(call_sid, store, clock, events,
                                     history_turns=settings.history_turns,
                                     redact=redactor(settings), live=live,
                                     mode="conversation-relay")
        self._quiet: asyncio.TimerHandle | None = None  # when Twilio should be done speaking
        self._exchange: _Exchange | None = None  # the reply being produced
        self._task: asyncio.Task[None] | None = None
        self._key_timer: asyncio.Task[None] | None = None  # ends a keyed number at a pause
        self._pending: list[str] = []
        self._pending_at = (0.0, 0.0)  # (session clock of the latest, wall clock of the first)
        self._restarts = 0
        self._ending = False
        self._end_reason = ""
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Twilio speaks the welcome greeting itself; it is the call's first assistant turn."""
        self.recorder.begin(text=self.settings.relay_greeting_text, streamed=True)
        self.recorder.said(self.settings.relay_greeting_text)
        self._speaking(self.settings.relay_greeting_text)

    async def close(self, reason: str, status: str = "completed") -> None:
        """End the call: stop the reply, record what is unrecorded, close the call record."""
        if self._closed:
            return
        self._closed = True
        self._state(CallState.ENDED)
        exchange = self._exchange
        for task in (self._task, self._key_timer):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if (turn := self.recorder.current) is not None:
            self.recorder.finish(turn, interrupted=not turn.streamed)
        unanswered = ([exchange.text] if exchange and exchange.turn is None else []) + self._pending
        if unanswered:
            self.recorder.user(" ".join(unanswered), self._pending_at[1] or time.time())
        await self.recorder.close(status=status, reason=self._end_reason or reason)

    # --- state, as live watchers see it --------------------------------------------------

    def _state(self, state: CallState) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
        self.recorder.state(state)

    def _speaking(self, text: str) -> None:
        """Twilio speaks ``text`` now; it is done (listening) after the time that takes at the
        usual pace, unless something happens first. An estimate: Twilio does not say."""
        self._state(CallState.SPEAKING)
        seconds = len(text.split()) / SPOKEN_WORDS_PER_S
        self._quiet = asyncio.get_running_loop().call_later(
            seconds, self.recorder.state, CallState.LISTENING)

    # --- operator actions (the console) -----------------------------------------------------

    async def hang_up(self) -> None:
        await self._operator(Tool.END_CALL)

    async def transfer(self, number: str) -> None:
        """Twilio dials the configured transfer number once the session ends (relay action)."""
        await self._operator(Tool.TRANSFER)

    async def _operator(self, tool: Tool) -> None:
        """An operator ends the session: stop answering, hand the call back to Twilio."""
        self._ending = True
        self._cancel_reply()
        self.recorder.event("operator", tool=tool.value)
        self._end_reason = f"operator: {tool.value}"
        await self.transport.end(tool, self.call_sid)

    # --- inbound messages (called by the socket's receive loop; never block) --------------

    def on_prompt(self, text: str, *, last: bool) -> None:
        text = text.strip()
        if not last or not any(ch.isalnum() for ch in text):
            return  # partial prompts and noise: the final prompt carries the words
        if self._ending:
            # The caller's words go to the call record, not the journal (DEBUG only).
            log.info("call %s: prompt while ending the call; recorded, not answered",
                     self.call_sid)
            log.debug("call %s: unanswered prompt %r", self.call_sid, text)
            self.recorder.user(text, time.time())
            return
        waiting = sum(len(p) + 1 for p in self._pending)
        if waiting + len(text) > MAX_PENDING_CHARS:
            log.warning("call %s: %d characters already wait for an answer; prompt dropped",
                        self.call_sid, waiting)
            return
        self._pending_at = (self.clock.now(),
                            self._pending_at[1] if self._pending else time.time())
        self._pending.append(text)
        exchange = self._exchange
        if exchange is None:
            self._restarts = 0
            self._start_reply()
        elif exchange.turn is None and exchange.tool is None and self._restarts < MAX_RESTARTS:
            log.info("call %s: caller kept talking before the reply began; answering both",
                     self.call_sid)
            self._restarts += 1
            self._cancel_reply()
            self._start_reply()
        else:
            log.info("call %s: prompt while replying; it waits (%d waiting)", self.call_sid,
                     len(self._pending))

    def on_interrupt(self, heard: str, duration_ms: int | str) -> None:
        self.recorder.event("interrupt", heard=heard, duration_ms=duration_ms)
        turn = self.recorder.current
        if not self._ending:
            self._cancel_reply()
            self._state(CallState.LISTENING)
        if turn is not None:
            self.recorder.finish(turn, interrupted=True, heard=heard)
        log.info("call %s: interrupted; caller heard %.120r", self.call_sid, heard)

    def on_dtmf(self, digit: str) -> None:
        self.recorder.event("dtmf", digit=digit)
        if self._ending:
            return
        press = self.agent.press(self.recorder.conversation, digit, self.clock.now())
        if press.tool is not None:
            self._cancel_reply()
            if (turn := self.recorder.current) is not None:
                self.recorder.finish(turn, interrupted=True)
            self._start_reply(tool=press.tool)
        else:
            self._on_keys(press)

    def _on_keys(self, press: KeyPress) -> None:
        """A keyed number ended (say so) or goes on (wait for the pause that would end it)."""
        if self._key_timer is not None:
            self._key_timer.cancel()
            self._key_timer = None
        if press.keyed is not None:
            self._cancel_reply()
            self._start_reply(keyed=(press.keyed.keys, press.keyed.said))
        elif press.wait_s is not None:
            self._key_timer = asyncio.create_task(self._keys_pause(press.wait_s))

    async def _keys_pause(self, wait_s: float) -> None:
        await self.clock.sleep(wait_s)
        self._key_timer = None
        if not self._ending:
            self._on_keys(self.agent.key_pause(self.recorder.conversation, self.clock.now()))

    def on_error(self, description: str) -> None:
        self.recorder.failed("relay", StageError(ErrorCode.TWILIO_ERROR, description))

    # --- one reply ------------------------------------------------------------------------

    def _start_reply(self, tool: Tool | None = None,
                     keyed: tuple[str, str] | None = None) -> None:
        """Answer everything waiting (or run ``tool``, or say what a keyed entry needs) as one
        exchange."""
        if (turn := self.recorder.current) is not None:
            self.recorder.finish(turn, interrupted=False)
        words = tool is None and keyed is None
        text = " ".join(self._pending) if words else ""
        heard_at, started = self._pending_at if words else (self.clock.now(), time.time())
        if words:
            self._pending.clear()
        exchange = _Exchange(text=text, heard_at=heard_at, started=started, tool=tool,
                             keyed=keyed)
        self._exchange = exchange
        self._state(CallState.THINKING)
        self._task = asyncio.create_task(self._reply(exchange), name=f"relay-{self.call_sid}")

    def _cancel_reply(self) -> None:
        """Stop the running reply; words it answered but never began to answer wait again."""
        exchange, task = self._exchange, self._task
        if exchange is None or task is None:
            return
        task.cancel()
        self._exchange = None
        if exchange.turn is None and exchange.text:
            self._pending.insert(0, exchange.text)
            self._pending_at = (self._pending_at[0], exchange.started)

    async def _reply(self, exchange: _Exchange) -> None:
        metrics = TurnMetrics()
        sentences = SentenceChunker()
        try:
            if exchange.keyed is not None:
                reply = Reply.saying(exchange.keyed[1])
            else:
                with stage(ErrorCode.RETRIEVAL_FAILED):
                    reply = await self.agent.reply(self.recorder.conversation, exchange.text,
                                                   tool=exchange.tool)
            metrics.retrieval_s = reply.retrieval_s
            if reply.tool is not None:
                self._ending = True
            llm_start = self.recorder.stage(StageEventType.LLM_START)
            with stage(ErrorCode.LLM_FAILED):
                async for token in reply.tokens:
                    if metrics.llm_ttft_s is None:
                        at = self.recorder.stage(StageEventType.LLM_FIRST_TOKEN)
                        metrics.llm_ttft_s = at - llm_start
                    if not token:
                        continue
                    if exchange.turn is None:
                        exchange.turn = self._commit(exchange, reply, metrics)
                    exchange.turn.text += token
                    for sentence in sentences.push(token):
                        self.recorder.said(sentence)
                    await self.transport.send_text(token, last=False)
            reply.measure(metrics)
            if exchange.turn is None:
                raise StageError(ErrorCode.EMPTY_REPLY, "the model produced nothing to say")
            await self.transport.send_text("", last=True)
            for sentence in sentences.flush():
                self.recorder.said(sentence)
            self._speaking(exchange.turn.text)
            self.recorder.replied(reply, self.settings)
            exchange.turn.text = exchange.turn.text.strip()
            exchange.turn.streamed = True
            self.recorder.stage(StageEventType.TURN_END)
            if reply.tool is not None:
                await self._hand_off(reply.tool, exchange.turn)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one bad turn must not end the call
            self.recorder.failed("turn", StageError.of(err))
            if exchange.turn is None and exchange.text:
                self.recorder.user(exchange.text, exchange.started)
            await self.transport.send_text(self.settings.apology, last=True)
            self.recorder.said(self.settings.apology)
            self._speaking(self.settings.apology)
        if self._exchange is exchange:
            self._exchange = None
            if self._pending and not self._ending:
                self._start_reply()

    def _commit(self, exchange: _Exchange, reply: Reply, metrics: TurnMetrics) -> AgentTurn:
        """The first token goes out: from here on the exchange happened, so log it."""
        metrics.first_token_sent_s = self.clock.now() - exchange.heard_at
        metrics.tts_provider = f"twilio:{self.settings.relay_tts_provider or 'default'}"
        self._restarts = 0
        self._state(CallState.SPEAKING)
        said = f"keyed {exchange.keyed[0]}" if exchange.keyed else exchange.text
        if said:
            self.recorder.user(said, exchange.started)
            self.recorder.conversation.add("user", said)
        else:
            self.recorder.idx += 1  # a key press, not words: the turn still gets its number
        return self.recorder.begin(metrics=metrics, kb_chunks=[c.id for c in reply.sources])

    async def _hand_off(self, tool: Tool, turn: AgentTurn) -> None:
        """Let Twilio say the phrase, then end the session; the action route dials or hangs up."""
        self.recorder.event("tool", tool=tool.value)
        await self.clock.sleep(min(MAX_END_WAIT_S, len(turn.text.split()) / SPOKEN_WORDS_PER_S))
        await self.transport.end(tool, self.call_sid)
        self._end_reason = f"handed off: {tool.value}"
        self.recorder.finish(turn, interrupted=False)  # no-op if an interrupt recorded it
        log.info("call %s: session ended for %s", self.call_sid, tool.value)
