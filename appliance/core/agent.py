"""The agent's brain for one turn: tools, retrieval, prompt, streamed reply.

Every front door (Media Streams calls, ConversationRelay, ``appliance ask``) goes through
:meth:`Agent.reply`, so what a business checks with ``ask`` is exactly what callers get.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from datetime import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from appliance.config import Settings
from appliance.core.workers import Workers, iterate_in, run_in
from appliance.engines.base import ChatMessage, KbChunk, KnowledgeBase, Llm

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 6  # recent messages kept verbatim; older ones fall out of the prompt


class Tool(enum.Enum):
    END_CALL = "end_call"
    TRANSFER = "transfer"


_END_CALL = re.compile(
    r"\b(good ?bye|bye|hang up|that'?s all|that is all|nothing else|no,? thanks?)\b", re.I)
_TRANSFER = re.compile(
    r"\b(human|real person|a person|someone|somebody|representative|operator|agent|"
    r"receptionist|transfer me|speak to|talk to)\b", re.I)
DTMF_TOOLS = {"0": Tool.TRANSFER}


def detect_tool(text: str, *, can_transfer: bool) -> Tool | None:
    """Intent rules for the two call-control tools.

    The tiny default model cannot call functions reliably, so the caller's own words decide;
    a false 'end call' is worse than none, so it needs a short utterance.
    """
    if can_transfer and _TRANSFER.search(text):
        return Tool.TRANSFER
    if _END_CALL.search(text) and len(text.split()) <= 8:
        return Tool.END_CALL
    return None


@dataclass
class Conversation:
    """What the agent remembers of one call."""

    session_id: str
    history: list[ChatMessage] = field(default_factory=list)

    def add(self, role: str, text: str) -> None:
        if text:
            self.history.append(ChatMessage(role, text))


@dataclass
class Reply:
    """One turn's answer: a token stream plus what was learned producing it."""

    tokens: AsyncIterator[str]
    tool: Tool | None = None
    sources: list[KbChunk] = field(default_factory=list)
    retrieval_s: float = 0.0
    grounded: bool = True


class Agent:
    def __init__(self, settings: Settings, llm: Llm, kb: KnowledgeBase | None,
                 workers: Workers) -> None:
        self.settings = settings
        self.llm = llm
        self.kb = kb
        self.workers = workers

    @property
    def can_transfer(self) -> bool:
        return bool(self.settings.transfer_number)

    def phrase_for(self, tool: Tool) -> str:
        if tool is Tool.TRANSFER:
            return "Sure, let me transfer you to a colleague now."
        return self.settings.goodbye

    @property
    def unknown_answer(self) -> str:
        offer = "transfer you to a colleague" if self.can_transfer else "take a message"
        return f"I'm sorry, I don't have that information. I can {offer} if you like."

    async def retrieve(self, conversation: Conversation, text: str) -> list[KbChunk]:
        """Top chunks for the caller's words plus the last thing they asked, off the loop."""
        if self.kb is None:
            return []
        previous = [m.content for m in conversation.history if m.role == "user"][-1:]
        query = " ".join([*previous, text]) if len(text.split()) < 4 else text
        return await run_in(self.workers.kb, self.kb.search, query, self.settings.kb_top_k)

    async def reply(self, conversation: Conversation, text: str,
                    tool: Tool | None = None) -> Reply:
        """Decide what to say to ``text``; the returned token stream is lazy and cancellable."""
        tool = tool or detect_tool(text, can_transfer=self.can_transfer)
        if tool is not None:
            return Reply(tokens=_one(self.phrase_for(tool)), tool=tool)
        started = time.monotonic()
        chunks = await self.retrieve(conversation, text)
        relevant = [c for c in chunks if c.distance <= self.settings.kb_max_distance]
        retrieval_s = time.monotonic() - started
        if self.kb is not None and not relevant:
            log.info("no document close enough (best %.2f): declining",
                     min((c.distance for c in chunks), default=float("nan")))
            return Reply(tokens=_one(self.unknown_answer), sources=chunks,
                         retrieval_s=retrieval_s, grounded=False)
        messages = self.build_messages(conversation, text, relevant)
        tokens = iterate_in(self.workers.llm, lambda: self.llm.stream_chat(
            messages, max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature, session_id=conversation.session_id))
        return Reply(tokens=tokens, sources=relevant, retrieval_s=retrieval_s)

    def build_messages(self, conversation: Conversation, text: str,
                       chunks: list[KbChunk]) -> list[ChatMessage]:
        """System persona, recent history, then facts inside the user message.

        Small models follow facts placed in the user message far better than in the system
        prompt; history stays fact-free so the cached prompt prefix is reused across turns.
        """
        user = text
        if chunks:
            facts = "\n".join(f"- {fact}" for fact in self._facts(chunks))
            today = datetime.now().strftime("%A, %B %d")
            user = (f"Facts about {self.settings.business_name} (today is {today}):\n{facts}\n\n"
                    f"Caller: {text}\nReply in one or two short sentences using the facts.")
        return [ChatMessage("system", self.settings.system_prompt),
                *conversation.history[-HISTORY_MESSAGES:],
                ChatMessage("user", user)]


    def _facts(self, chunks: list[KbChunk]) -> list[str]:
        """Best chunks first, within a character budget: every prompt token costs the caller
        time (a small CPU model reads ~250 tokens/s), so the best chunk always goes in whole
        and weaker ones only while they fit."""
        budget = self.settings.kb_context_chars
        facts: list[str] = []
        for chunk in chunks:
            text = " ".join(chunk.text.split())
            if facts and len(text) > budget:
                break
            facts.append(text)
            budget -= len(text)
        return facts


async def _one(text: str) -> AsyncIterator[str]:
    yield text
