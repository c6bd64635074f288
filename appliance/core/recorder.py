"""One call's bookkeeping, shared by both front doors (Media Streams and ConversationRelay).

Turn numbering, the user and assistant records (an assistant turn once, with what the caller
heard, which is also what the model remembers), events and errors in the call log, stage events
and the live feed (state, each utterance, each sentence as spoken) for live watchers, the
background writes a call must finish before it closes, and the close.
The sessions decide *when*; this decides *how it is written down*, the same way for both.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.config import Settings
from appliance.core.agent import Conversation, Reply
from appliance.core.clock import Clock
from appliance.core.events import EventSink, StageError, StageEvent, StageEventType
from appliance.core.live import CallState, LiveFeed
from appliance.core.spoken import AgentTurn
from appliance.core.workers import Background
from appliance.engines.base import CallStore
from appliance.messages.delivery import deliver

log = logging.getLogger(__name__)


class CallRecorder:
    def __init__(self, call_sid: str, store: CallStore, clock: Clock,
                 events: EventSink | None = None, history_turns: int = 20,
                 redact: Callable[[str], str] | None = None, live: LiveFeed | None = None,
                 mode: str = "") -> None:
        self.call_sid = call_sid
        # what transcripts lose before they are stored (core/redaction.py); the model's memory
        # of the call keeps the words as said
        self._redact = redact or (lambda text: text)
        self.store = store
        self.clock = clock
        self.conversation = Conversation(session_id=call_sid, max_messages=2 * history_turns)
        self.idx = 0  # the number of the latest caller turn; the assistant's reply shares it
        self.current: AgentTurn | None = None  # the latest assistant turn not yet recorded
        self._events = events
        self._background = Background()
        self._live = live
        if live is not None:
            live.opened(call_sid, mode)

    # --- turns ----------------------------------------------------------------------------

    def user(self, text: str, started: float) -> None:
        """The caller's words, as one numbered turn."""
        self.idx += 1
        if self._live is not None:
            self._live.line(self.call_sid, "user", self._redact(text))
        self.spawn(self.store.add_turn(self.call_sid, idx=self.idx, role="user",
                                       text=self._redact(text), started=started))

    def begin(self, **fields: Any) -> AgentTurn:
        """A new assistant turn; the one before it, if still open, was heard in full."""
        if self.current is not None:
            self.finish(self.current, interrupted=False)
        self.current = AgentTurn(idx=self.idx, **fields)
        return self.current

    def said(self, text: str) -> None:
        """A sentence (or fixed phrase) of the agent's is being spoken: for live watchers."""
        if self._live is not None:
            self._live.line(self.call_sid, "assistant", self._redact(text.strip()))

    def state(self, state: CallState) -> None:
        """The call is now listening, thinking or speaking: for live watchers."""
        if self._live is not None:
            self._live.state(self.call_sid, state)

    def finish(self, turn: AgentTurn, *, interrupted: bool, heard: str | None = None) -> None:
        """Record an assistant turn once; ``heard`` None means all of it was heard."""
        if self.current is turn:
            self.current = None
        if turn.recorded or not (turn.text or turn.pieces):
            return
        turn.recorded = True
        heard_text = turn.text if heard is None else heard.strip()
        self.conversation.add("assistant", heard_text)  # the model remembers what was heard
        self.spawn(self.store.add_assistant_turn(
            self.call_sid, idx=turn.idx, text=self._redact(turn.text),
            heard_text=self._redact(heard_text),
            started=turn.started, interrupted=interrupted, kb_chunks=turn.kb_chunks,
            metrics=turn.metrics))

    def replied(self, reply: Reply, settings: Settings) -> None:
        """What a reply leaves behind once spoken: an ``ungrounded`` event when the answer guard
        replaced the model's words (counted per call), and a confirmed message handed to
        delivery (stored with the call, then sent to the webhook and e-mail if configured)."""
        if reply.guard.replaced:
            self.event("ungrounded", reason=reply.guard.replaced)
        if reply.message is not None:
            self.spawn(deliver(self.store, settings, self.call_sid, reply.message))

    # --- events ---------------------------------------------------------------------------

    def event(self, type_: str, **detail: Any) -> None:
        """A call-log event (dtmf, barge-in, tool, ...); the words a barge-in cut short are a
        transcript too."""
        if isinstance(heard := detail.get("heard"), str):
            detail["heard"] = self._redact(heard)
        self.spawn(self.store.add_event(self.call_sid, type_, **detail))

    def stage(self, type_: StageEventType, **data: Any) -> float:
        """Announce a stage to live watchers; returns its time on the session clock."""
        at = self.clock.now()
        if self._events is not None:
            self._events(StageEvent(type_, at, data))
        return at

    def failed(self, stage: str, error: StageError) -> None:
        """A stage failed: logged (a fault of ours with its traceback), written to the call log
        with its code, and watchers told."""
        if error.__cause__ is not None:
            log.error("call %s: %s failed: %s", self.call_sid, stage, error.message,
                      exc_info=error.__cause__)
        else:
            # bounded: a Twilio error description is the caller side's text, of any length
            log.warning("call %s: %s failed: %.200r", self.call_sid, stage, error.message)
        self.stage(StageEventType.ERROR, stage=stage, code=error.code, message=error.message)
        self.event("error", stage=stage, code=str(error.code), reason=error.message)

    # --- background work and the end -------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        self._background.spawn(coro)

    async def close(self, *, status: str, reason: str) -> None:
        """Finish every pending write, then close the call's record."""
        if self._live is not None:
            self._live.closed(self.call_sid)
        await self._background.drain()
        await self.store.call_ended(self.call_sid, status=status, reason=reason)
        log.info("call %s closed: %s", self.call_sid, reason)

