"""Answering a turn before it is confirmed: the work started at the caller's first pause.

At a pause the words are transcribed at once (the turn may be over); with them, the answer is
worked out too: the knowledge-base search, with ``answer_style = "generative"`` the model's
first tokens, and the audio of the answer's first piece (a local voice only). Nothing of it
reaches the caller or the call log until the end of the turn is confirmed, and only work
without side effects runs early: a tool (transfer, hang up) or a take-a-message step is left
for the confirmed turn, which decides it afresh. If the caller speaks on, the next pause (or
the start of their next utterance) drops all of it; early work also waits behind every
confirmed turn's in the shared pools (core/workers.py).

Why: the end of a turn is confirmed 0.05–1.0 s after the first pause (the turn model's verdict,
~40 ms on a free core and ~130 ms on a busy one, or its 1 s wait on an unfinished-sounding
sentence), and a turn's retrieval, first tokens and first audio need nothing from that time
but the words. What it saved is measured by ``appliance bench`` (README, Performance).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, cast

from appliance.core.agent import HISTORY_MESSAGES, Agent, Conversation, Reply
from appliance.core.sentences import SentenceChunker
from appliance.core.workers import Ticket, ranked
from appliance.engines.base import ChatMessage, Transcript, Tts, Warmable

T = TypeVar("T")
_END = object()


def said(transcript: Transcript, no_speech_prob: float) -> str | None:
    """The words of ``transcript``, or None where it holds none (noise, a cough)."""
    text = transcript.text.strip()
    if not any(ch.isalnum() for ch in text) or transcript.no_speech_prob > no_speech_prob:
        return None
    return text


@dataclass(frozen=True, slots=True)
class Basis:
    """What a speculative answer was worked out from; it is used only if the turn has the same."""

    text: str
    history: tuple[ChatMessage, ...]

    @classmethod
    def of(cls, conversation: Conversation, text: str) -> Basis:
        return cls(text, tuple(conversation.history[-HISTORY_MESSAGES:]))


class Speculation:
    """The transcription started at one pause, and the answer worked out from its words."""

    def __init__(self, words: asyncio.Future[Transcript], ticket: Ticket, agent: Agent,
                 tts: Tts, conversation: Conversation, no_speech_prob: float) -> None:
        self.words = words
        self.ticket = ticket  # its work's place in the shared pools: behind confirmed turns
        self._agent = agent
        # A cloud voice is not asked early: it bills speech that may be dropped, and it names
        # who spoke per task (engines/failover_tts.py), which an early task would not pass on.
        self._tts = None if isinstance(tts, Warmable) else tts
        self.ahead: asyncio.Task[Ahead | None] | None = None  # the first piece, spoken early
        self._conversation = conversation
        self._no_speech_prob = no_speech_prob
        self._answer: asyncio.Task[tuple[Basis, Reply] | None] = ranked(ticket, self._work())
        self._answer.add_done_callback(_seen)

    async def _work(self) -> tuple[Basis, Reply] | None:
        text = said(await asyncio.shield(self.words), self._no_speech_prob)
        if text is None:
            return None
        basis = Basis.of(self._conversation, text)
        reply = await self._agent.prepare(self._conversation, text)
        if reply is None:
            return None
        tokens = Primed(reply.tokens)
        if self._tts is not None:
            self.ahead = ranked(self.ticket, self._speak_ahead(self._tts, tokens))
            self.ahead.add_done_callback(_seen)
        return basis, replace(reply, tokens=tokens)

    @staticmethod
    async def _speak_ahead(tts: Tts, tokens: Primed[str]) -> Ahead | None:
        if (piece := await first_piece(tokens)) is None:
            return None
        return Ahead(piece, Primed(tts.synthesize(piece)))

    async def answer_for(self, conversation: Conversation, text: str) -> Reply | None:
        """The answer worked out early, if it was for these words in this conversation (else
        None, and the early work is dropped)."""
        with contextlib.suppress(Exception):  # a failed early answer: the turn answers afresh
            done = await self._answer
            if done is not None and done[0] == Basis.of(conversation, text):
                return done[1]
            if done is not None:
                await close(done[1].tokens)
        self._drop_ahead()
        return None

    def drop(self) -> None:
        """The caller spoke on (or the turn was forced to end): stop all of it."""
        self.words.cancel()
        if not self._answer.done():
            self._answer.cancel()
        elif not self._answer.cancelled() and self._answer.exception() is None:
            if (done := self._answer.result()) is not None:
                asyncio.ensure_future(close(done[1].tokens))
        self._drop_ahead()

    def _drop_ahead(self) -> None:
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return
        if not ahead.done():
            ahead.cancel()
        elif not ahead.cancelled() and ahead.exception() is None and (
                spoken := ahead.result()) is not None:
            asyncio.ensure_future(spoken.audio.aclose())


class Primed(Generic[T]):
    """``items`` pulled from now on into a buffer, so a model reads its prompt and writes (or a
    voice speaks) while the turn is unconfirmed; :meth:`aclose` stops it."""

    def __init__(self, items: AsyncIterator[T]) -> None:
        self._items = items
        self._buffer: asyncio.Queue[object] = asyncio.Queue()
        self.seen: list[T] = []  # everything pulled so far, read or not
        self._grew = asyncio.Event()
        self._finished = False
        self._puller = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        try:
            async for item in self._items:
                self.seen.append(item)
                self._buffer.put_nowait(item)
                self._grew.set()
        except Exception as err:  # handed to the reader, raised there
            self._buffer.put_nowait(err)
        finally:
            self._buffer.put_nowait(_END)
            self._finished = True
            self._grew.set()
            await close(self._items)

    def __aiter__(self) -> Primed[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._buffer.get()
        if item is _END:
            self._buffer.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return cast(T, item)

    async def watch(self) -> AsyncIterator[T]:
        """Every item so far and to come, without taking them from the reader."""
        index = 0
        while True:
            while index < len(self.seen):
                yield self.seen[index]
                index += 1
            if self._finished:
                return
            self._grew.clear()
            await self._grew.wait()

    async def aclose(self) -> None:
        self._puller.cancel()
        await asyncio.gather(self._puller, return_exceptions=True)


@dataclass(slots=True)
class Ahead:
    """The first piece of an answer, synthesized before the turn was confirmed."""

    text: str
    audio: Primed[bytes]


async def first_piece(tokens: Primed[str]) -> str | None:
    """The piece the speaker will say first (same chunker, same tokens), once it is complete."""
    chunker = SentenceChunker()
    async for token in tokens.watch():
        for piece in chunker.push(token):
            return piece
    return next(iter(chunker.flush()), None)


async def close(tokens: AsyncIterator[Any]) -> None:
    """Stop a token stream early (a model stops at its next token)."""
    if (aclose := getattr(tokens, "aclose", None)) is not None:
        await aclose()


def _seen(task: asyncio.Task[object]) -> None:
    """Mark a dropped answer's error as seen: the confirmed turn reports its own."""
    if not task.cancelled():
        task.exception()
