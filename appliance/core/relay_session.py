"""One ConversationRelay call: Twilio hears and speaks, the same Agent decides what to say.

Twilio sends the caller's words as text; each final prompt runs one ``Agent.reply`` and its
tokens go back as they are produced. The bookkeeping mirrors the Media Streams session: one user
and one assistant turn per exchange, metrics per assistant turn, events for DTMF, interruptions,
tools and errors, and only what the caller heard in ``heard_text``.

Prompts that arrive while a reply is being produced (one reply runs at a time):

* nothing of the reply has gone out yet: the caller simply kept talking, so the reply is
  cancelled and restarted once for both utterances together (one user turn). At most
  ``MAX_RESTARTS`` times per turn, so a flood cannot keep the shared LLM busy with replies
  that are thrown away;
* otherwise (tokens are out and Twilio did not interrupt) the prompt waits; prompts that pile up
  are joined into one and answered as one turn when the reply is done. Waiting text is capped at
  ``MAX_PENDING_CHARS``; beyond that prompts are dropped with a warning.

An ``interrupt`` cancels the running reply (never a hand-off phrase: once a tool is chosen the
call ends); what it answered, if nothing was sent, waits to be joined with the next prompt. An assistant turn is recorded when the next exchange
starts, when it is interrupted (heard = ``utteranceUntilInterrupt``), or when the call ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.config import Settings
from appliance.core.agent import DTMF_TOOLS, Agent, Conversation, Reply, Tool
from appliance.core.workers import Background
from appliance.messages.delivery import deliver
from appliance.store.calls import CallStore

log = logging.getLogger(__name__)

MAX_RESTARTS = 2
MAX_PENDING_CHARS = 1000
SPOKEN_WORDS_PER_S = 2.5  # to let Twilio finish the goodbye before `end` cuts the session
MAX_END_WAIT_S = 6.0


class RelayTransport(Protocol):
    """How the session talks back to Twilio; implemented by the web layer."""

    async def send_text(self, token: str, last: bool) -> None: ...
    async def end(self, handoff_data: str) -> None: ...


def handoff_data(tool: Tool, call_sid: str) -> str:
    """The ``end`` message's payload; Twilio posts it back to the <Connect> action URL."""
    return json.dumps({"tool": tool.value, "callSid": call_sid})


def handoff_tool(data: str) -> Tool | None:
    """The tool a ``HandoffData`` form field asks for; None when absent or not ours."""
    try:
        return Tool(json.loads(data).get("tool"))
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass
class RelayTurn:
    """The assistant's side of one exchange: what was sent to Twilio, and its timings."""

    idx: int
    started: float = field(default_factory=time.time)
    text: str = ""
    kb_chunks: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False  # `last: true` went out
    recorded: bool = False


@dataclass
class _Exchange:
    """One reply being produced: the caller's words it answers and, once sent, its turn."""

    text: str
    heard_at: float  # monotonic arrival of the caller's last prompt in ``text``
    started: float  # wall clock, for the user turn
    tool: Tool | None = None
    turn: RelayTurn | None = None


class RelaySession:
    def __init__(self, call_sid: str, settings: Settings, agent: Agent, store: CallStore,
                 transport: RelayTransport) -> None:
        self.call_sid = call_sid
        self.settings = settings
        self.agent = agent
        self.store = store
        self.transport = transport
        self.conversation = Conversation(session_id=call_sid)
        self._turn_idx = 0
        self._current: RelayTurn | None = None  # latest assistant turn not yet recorded
        self._exchange: _Exchange | None = None  # the reply being produced
        self._task: asyncio.Task[None] | None = None
        self._pending: list[str] = []
        self._pending_at = (0.0, 0.0)  # (monotonic of the latest, wall clock of the first)
        self._restarts = 0
        self._ending = False
        self._end_reason = ""
        self._closed = False
        self._background = Background()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Twilio speaks the welcome greeting itself; it is the call's first assistant turn."""
        self._current = RelayTurn(idx=0, text=self.settings.greeting_text, streamed=True)

    async def close(self, reason: str, status: str = "completed") -> None:
        """End the call: stop the reply, record what is unrecorded, close the call record."""
        if self._closed:
            return
        self._closed = True
        exchange = self._exchange
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._current is not None:
            self._finish(self._current, interrupted=not self._current.streamed, heard=None)
        unanswered = ([exchange.text] if exchange and exchange.turn is None else []) + self._pending
        if unanswered:
            self._record_user(" ".join(unanswered), self._pending_at[1] or time.time())
        await self._background.drain()
        await self.store.call_ended(self.call_sid, status=status,
                                    reason=self._end_reason or reason)
        log.info("call %s closed: %s", self.call_sid, self._end_reason or reason)

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
            self._record_user(text, time.time())
            return
        waiting = sum(len(p) + 1 for p in self._pending)
        if waiting + len(text) > MAX_PENDING_CHARS:
            log.warning("call %s: %d characters already wait for an answer; prompt dropped",
                        self.call_sid, waiting)
            return
        now = time.monotonic()
        self._pending_at = (now, self._pending_at[1] if self._pending else time.time())
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
        self._spawn(self.store.add_event(self.call_sid, "interrupt", heard=heard,
                                         duration_ms=duration_ms))
        turn = self._current
        if not self._ending:
            self._cancel_reply()
        if turn is not None:
            self._finish(turn, interrupted=True, heard=heard)
        log.info("call %s: interrupted; caller heard %.120r", self.call_sid, heard)

    def on_dtmf(self, digit: str) -> None:
        self._spawn(self.store.add_event(self.call_sid, "dtmf", digit=digit))
        tool = DTMF_TOOLS.get(digit)
        if tool is Tool.TRANSFER and self.agent.can_transfer and not self._ending:
            self._cancel_reply()
            if self._current is not None:
                self._finish(self._current, interrupted=True, heard=None)
            self._start_reply(tool=tool)

    def on_error(self, description: str) -> None:
        log.warning("call %s: Twilio reported an error: %.200r", self.call_sid, description)
        self._spawn(self.store.add_event(self.call_sid, "error", stage="relay",
                                         reason=description))

    # --- one reply ------------------------------------------------------------------------

    def _start_reply(self, tool: Tool | None = None) -> None:
        """Answer everything waiting (or run ``tool``) as one exchange."""
        if self._current is not None:
            self._finish(self._current, interrupted=False, heard=None)
        text = "" if tool else " ".join(self._pending)
        heard_at, started = self._pending_at if not tool else (time.monotonic(), time.time())
        if not tool:
            self._pending.clear()
        exchange = _Exchange(text=text, heard_at=heard_at, started=started, tool=tool)
        self._exchange = exchange
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
        metrics: dict[str, Any] = {}
        try:
            reply = await self.agent.reply(self.conversation, exchange.text, tool=exchange.tool)
            if reply.tool is not None:
                self._ending = True
            llm_start = time.monotonic()
            async for token in reply.tokens:
                metrics.setdefault("llm_ttft_s", time.monotonic() - llm_start)
                if not token:
                    continue
                if exchange.turn is None:
                    exchange.turn = self._commit(exchange, reply, metrics)
                exchange.turn.text += token
                await self.transport.send_text(token, last=False)
            if exchange.turn is None:
                raise RuntimeError("the model produced nothing to say")
            await self.transport.send_text("", last=True)
            if reply.guard.replaced:  # counted per call: the model said something ungrounded
                self._spawn(self.store.add_event(self.call_sid, "ungrounded",
                                                 reason=reply.guard.replaced))
            if reply.message is not None:
                self._spawn(deliver(self.store, self.settings, self.call_sid, reply.message))
            exchange.turn.text = exchange.turn.text.strip()
            exchange.turn.streamed = True
            if reply.tool is not None:
                await self._hand_off(reply.tool, exchange.turn)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one bad turn must not end the call
            log.exception("call %s: relay turn failed", self.call_sid)
            self._spawn(self.store.add_event(self.call_sid, "error", stage="turn",
                                             reason=f"{type(err).__name__}: {err}"))
            if exchange.turn is None and exchange.text:
                self._record_user(exchange.text, exchange.started)
            await self.transport.send_text(self.settings.apology, last=True)
        if self._exchange is exchange:
            self._exchange = None
            if self._pending and not self._ending:
                self._start_reply()

    def _commit(self, exchange: _Exchange, reply: Reply,
                metrics: dict[str, Any]) -> RelayTurn:
        """The first token goes out: from here on the exchange happened, so log it."""
        metrics["first_token_sent_s"] = time.monotonic() - exchange.heard_at
        metrics["tts_provider"] = f"twilio:{self.settings.relay_tts_provider or 'default'}"
        self._restarts = 0
        if exchange.text:
            self._record_user(exchange.text, exchange.started)
            self.conversation.add("user", exchange.text)
        else:
            self._turn_idx += 1
        turn = RelayTurn(idx=self._turn_idx, metrics=metrics,
                         kb_chunks=[c.id for c in reply.sources])
        self._current = turn
        return turn

    async def _hand_off(self, tool: Tool, turn: RelayTurn) -> None:
        """Let Twilio say the phrase, then end the session; the action route dials or hangs up."""
        self._spawn(self.store.add_event(self.call_sid, "tool", tool=tool.value))
        await asyncio.sleep(min(MAX_END_WAIT_S, len(turn.text.split()) / SPOKEN_WORDS_PER_S))
        await self.transport.end(handoff_data(tool, self.call_sid))
        self._end_reason = f"handed off: {tool.value}"
        self._finish(turn, interrupted=False, heard=None)  # no-op if an interrupt recorded it
        log.info("call %s: session ended for %s", self.call_sid, tool.value)

    # --- bookkeeping ----------------------------------------------------------------------

    def _record_user(self, text: str, started: float) -> None:
        self._turn_idx += 1
        self._spawn(self.store.add_turn(self.call_sid, idx=self._turn_idx, role="user",
                                        text=text, started=started))

    def _finish(self, turn: RelayTurn, *, interrupted: bool, heard: str | None) -> None:
        """Record an assistant turn once; ``heard`` None means all that was sent."""
        if self._current is turn:
            self._current = None
        if turn.recorded or not turn.text:
            return
        turn.recorded = True
        heard_text = turn.text if heard is None else heard.strip()
        self.conversation.add("assistant", heard_text)
        self._record_turn(turn, heard_text, interrupted)

    def _record_turn(self, turn: RelayTurn, heard: str, interrupted: bool) -> None:
        self._spawn(self.store.add_assistant_turn(
            self.call_sid, idx=turn.idx, text=turn.text, heard_text=heard, started=turn.started,
            interrupted=interrupted, kb_chunks=turn.kb_chunks, metrics=turn.metrics))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        self._background.spawn(coro)
