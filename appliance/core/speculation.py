"""Answering a turn before it is confirmed: the work started at the caller's first pause.

At a pause the words are transcribed at once (the turn may be over); with them, the answer is
worked out too: the knowledge-base search and, with ``answer_style = "generative"``, the
model's first tokens. Nothing of it reaches the caller or the call log until the end of the
turn is confirmed, and only work without side effects runs early: a tool (transfer, hang up) or
a take-a-message step is left for the confirmed turn, which decides it afresh. If the caller
speaks on, the next pause (or the start of their next utterance) drops all of it.

Why: the end of a turn is confirmed 0.1–1.0 s after the first pause (the turn model's verdict,
or its 1 s wait on an unfinished-sounding sentence), and a turn's retrieval, prompt and first
tokens need nothing from that time but the words.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from appliance.core.agent import HISTORY_MESSAGES, Agent, Conversation, Reply
from appliance.core.workers import Ticket, ranked
from appliance.engines.base import ChatMessage, Transcript

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
                 conversation: Conversation, no_speech_prob: float) -> None:
        self.words = words
        self.ticket = ticket  # its work's place in the shared pools: behind confirmed turns
        self._agent = agent
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
        return basis, replace(reply, tokens=Primed(reply.tokens))

    async def answer_for(self, conversation: Conversation, text: str) -> Reply | None:
        """The answer worked out early, if it was for these words in this conversation (else
        None, and the early work is dropped)."""
        with contextlib.suppress(Exception):  # a failed early answer: the turn answers afresh
            done = await self._answer
            if done is not None and done[0] == Basis.of(conversation, text):
                return done[1]
            if done is not None:
                await close(done[1].tokens)
        return None

    def drop(self) -> None:
        """The caller spoke on (or the turn was forced to end): stop all of it."""
        self.words.cancel()
        if not self._answer.done():
            self._answer.cancel()
        elif not self._answer.cancelled() and self._answer.exception() is None:
            if (done := self._answer.result()) is not None:
                asyncio.ensure_future(close(done[1].tokens))


class Primed:
    """``tokens`` pulled from now on into a buffer, so a model reads its prompt and writes its
    first tokens while the turn is unconfirmed; :meth:`aclose` stops the model."""

    def __init__(self, tokens: AsyncIterator[str]) -> None:
        self._tokens = tokens
        self._buffer: asyncio.Queue[object] = asyncio.Queue()
        self._puller = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        try:
            async for token in self._tokens:
                self._buffer.put_nowait(token)
        except Exception as err:  # handed to the reader, raised there
            self._buffer.put_nowait(err)
        finally:
            self._buffer.put_nowait(_END)
            await close(self._tokens)

    def __aiter__(self) -> Primed:
        return self

    async def __anext__(self) -> str:
        item = await self._buffer.get()
        if item is _END:
            self._buffer.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, str)
        return item

    async def aclose(self) -> None:
        self._puller.cancel()
        await asyncio.gather(self._puller, return_exceptions=True)


async def close(tokens: AsyncIterator[str]) -> None:
    """Stop a token stream early (a model stops at its next token)."""
    if (aclose := getattr(tokens, "aclose", None)) is not None:
        await aclose()


def _seen(task: asyncio.Task[tuple[Basis, Reply] | None]) -> None:
    """Mark a dropped answer's error as seen: the confirmed turn reports its own."""
    if not task.cancelled():
        task.exception()
