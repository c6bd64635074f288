"""The agent's brain for one turn: tools, retrieval, prompt, streamed reply.

Every front door (Media Streams calls, ConversationRelay, ``appliance ask``) goes through
:meth:`Agent.reply`, so what a business checks with ``ask`` is exactly what callers get.

The default model is tiny (SmolLM2-135M): it answers well only when it is handed the one or two
lines that hold the answer, right next to the question. So a turn retrieves chunks, picks the
few fact lines in them that share the caller's words, and asks for one short sentence; the
reply is cut after two sentences. On 40 questions about the sample kb/ (see
tests/e2e/test_grounded_answers.py), whole chunks under a long persona put the fact in 9
replies; selected lines under the short persona in 30 (25 when the questions are capitalised
as Whisper writes them), with about 100 prompt tokens instead of 230.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta

from appliance.config import Settings
from appliance.core.workers import Workers, iterate_in, run_in
from appliance.engines.base import ChatMessage, KbChunk, KnowledgeBase, Llm

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 6  # recent messages kept verbatim; older ones fall out of the prompt
MAX_FACTS = 3  # fact lines per turn: more distract a small model
FACT_SCORE_RATIO = 0.5  # lines scoring below this share of the best line are left out
MAX_SENTENCES = 2  # a caller hears one or two sentences, then may ask on


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
    """What the agent remembers of one call: the latest ``max_messages`` only, so an hours-long
    call holds bounded memory (the prompt keeps only what fits in the context anyway)."""

    session_id: str
    history: list[ChatMessage] = field(default_factory=list)
    max_messages: int = 40

    def add(self, role: str, text: str) -> None:
        if text:
            self.history.append(ChatMessage(role, text))
            del self.history[:-self.max_messages]


@dataclass
class Reply:
    """One turn's answer: a token stream plus what was learned producing it."""

    tokens: AsyncIterator[str]
    tool: Tool | None = None
    sources: list[KbChunk] = field(default_factory=list)
    retrieval_s: float | None = None  # None: nothing was looked up (a tool's phrase)
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
        return self.settings.transfer_phrase if tool is Tool.TRANSFER else self.settings.goodbye

    def dtmf_tool(self, digit: str) -> Tool | None:
        """The tool a key press asks for, if this line can use it (0: a person)."""
        tool = DTMF_TOOLS.get(digit)
        return tool if tool is Tool.TRANSFER and self.can_transfer else None

    @property
    def unknown_answer(self) -> str:
        offer = "transfer you to a colleague" if self.can_transfer else "take a message"
        return f"I'm sorry, I don't have that information. I can {offer} if you like."

    async def retrieve(self, conversation: Conversation, text: str) -> list[KbChunk]:
        """Top chunks for the caller's words plus the last thing they asked, off the loop."""
        if self.kb is None:
            return []
        query = self.search_text(conversation, text)
        return await run_in(self.workers.kb, self.kb.search, query, self.settings.kb_top_k)

    @staticmethod
    def search_text(conversation: Conversation, text: str) -> str:
        """What a turn looks up: a short follow-up ("and on Saturday?") joins the last question."""
        previous = [m.content for m in conversation.history if m.role == "user"][-1:]
        return " ".join([*previous, text]) if len(text.split()) < 4 else text

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
        if relevant and not self._facts(relevant, text, self.search_text(conversation, text)):
            # Close in meaning yet no line shares a word with the question ("do you sell
            # hearing aids" near the services list): the tiny model would make an answer up.
            log.info("no fact line matches the question's words: declining")
            return Reply(tokens=_one(self.unknown_answer), sources=relevant,
                         retrieval_s=retrieval_s, grounded=False)
        messages = self.build_messages(conversation, text, relevant)
        tokens = iterate_in(self.workers.llm, lambda: self.llm.stream_chat(
            messages, max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature, session_id=conversation.session_id))
        return Reply(tokens=_brief(tokens, MAX_SENTENCES), sources=relevant,
                     retrieval_s=retrieval_s)

    def build_messages(self, conversation: Conversation, text: str,
                       chunks: list[KbChunk]) -> list[ChatMessage]:
        """System persona, recent history, then the facts and the question as the user message.

        Order matters for speed as well as answers: the constant persona comes first and the
        history stays fact-free, so llama.cpp reuses the cached prefix and only reads the new
        turn. The facts go in the user message, right before the question (a small model
        follows them there far better than in the system prompt).
        """
        user = text
        facts = self._facts(chunks, text, self.search_text(conversation, text))
        if facts:
            lines = "\n".join(f"- {fact}" for fact in facts)
            user = f"Facts:\n{lines}\n\nQuestion: {text}"
        return [ChatMessage("system", self.settings.system_prompt),
                *conversation.history[-HISTORY_MESSAGES:],
                ChatMessage("user", user)]

    def _facts(self, chunks: list[KbChunk], question: str = "",
               follow_up: str = "") -> list[str]:
        """The few fact lines that best match the question, within a character budget.

        Every prompt token costs the caller time (a small CPU model reads ~250 tokens/s) and
        every unrelated line is a chance for a small model to answer the wrong thing, so the
        chunks are cut into lines (list items, sentences) and ranked by the question's words,
        rarer words counting more. The best line always goes in; the others only while they
        fit the budget. The question's own words rank first; only if no line has them, the
        ``follow_up`` text (the question joined with the previous one) is tried. With no
        content word at all ("how much is it?") the best chunk's first lines go in; a question
        whose words no line shares gets none.
        """
        if not chunks:
            return []
        extra, dated = _day_words(question)
        business = set(_words(self.settings.business_name))
        worded = [t for t in dict.fromkeys((question, follow_up)) if t and _words(t, business)]
        if worded or extra:
            ranked = (_rank_lines(chunks, t, extra, business) for t in worded or [question])
            lines = next((found for found in ranked if found), [])
        else:
            lines = [fact for _, fact in _split_facts(chunks[0])]
        budget = self.settings.kb_context_chars
        facts: list[str] = []
        for line in lines[:MAX_FACTS]:
            if facts and len(line) > budget:
                break
            facts.append(line)
            budget -= len(line)
        return [*dated, *facts] if facts else []


# --- picking fact lines ---------------------------------------------------------------------

_STOP_WORDS = frozenset("""
a an the and or but if of to in on at for from by with about as is are was were be been being
do does did doing have has had i me my we our us you your it its they them their this that these
those there here what which who whom when where why how can could would should will shall may
might must any some much many more most no not yes so just than too very also only such up out
all each into um uh yeah hi hello please thanks thank like get got go going want need let tell
know okay ok well oh take""".split())
_SUFFIXES = ("ations", "ation", "ions", "ion", "ings", "ing", "ed", "es", "s")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_BULLET = re.compile(r"[-*•]\s+|\d+[.)]\s+")
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "ave", "vs", "etc", "e.g", "i.e",
                            "a.m", "p.m"})


def _words(text: str, drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Content words, lower-case, roughly stemmed ("located" and "location" → "locat")."""
    out = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if len(word) < 2 or word in _STOP_WORDS or word in drop:
            continue
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= (3 if suffix == "s" else 4):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


def _same_word(a: str, b: str) -> bool:
    """'park' matches 'parking', 'cancel' matches 'cancellation'; short words match exactly."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return long.startswith(short) if len(short) >= 4 else short == long


def _sentences(text: str) -> list[str]:
    parts: list[str] = []
    for part in re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", text):
        if parts and parts[-1].endswith(".") and _abbreviation(parts[-1][:-1]):
            parts[-1] += " " + part  # "Dr. Chen" is one sentence
        else:
            parts.append(part)
    return parts


def _split_facts(chunk: KbChunk) -> list[tuple[str, str]]:
    """(label, fact) pairs: list items whole, prose sentence by sentence.

    A chunk may hold a few short sections, each opening with its bare heading line; that line
    (or a question, in an FAQ) becomes the label the facts under it are matched by.
    """
    label = chunk.heading.rsplit(" > ", 1)[-1]
    facts: list[tuple[str, str]] = []
    for block in re.split(r"\n\s*\n", chunk.text):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if lines and not _BULLET.match(lines[0]) and (lines[0].endswith("?") or (
                not re.search(r"[.!:;,)]$", lines[0]) and len(lines[0].split()) <= 8)):
            label = lines.pop(0)
        items: list[list[object]] = []  # [is a list item, text]
        for line in lines:
            if bullet := _BULLET.match(line):
                items.append([True, line[bullet.end():]])
            elif items:
                items[-1][1] = f"{items[-1][1]} {line}"
            else:
                items.append([False, line])
        for is_item, item in items:
            lead = ""  # "Yes." alone says nothing: it joins the sentence after it
            for sentence in [str(item)] if is_item else _sentences(str(item)):
                if sentence.endswith("?"):
                    continue
                if not is_item and len(sentence.split()) < 4:
                    lead += sentence + " "
                    continue
                facts.append((label, lead + sentence))
                lead = ""
            if lead:
                facts.append((label, lead.strip()))
    return facts


def _rank_lines(chunks: list[KbChunk], question: str, extra: list[str],
                drop: set[str]) -> list[str]:
    """Fact lines sharing the question's words, best first; ties keep retrieval order.

    A word scores its inverse document frequency over the candidate lines (so 'saturday'
    outweighs 'open'), half as much when only the line's section heading has it.
    """
    query = set(_words(question, drop)) | set(extra)
    if extra:  # 'tomorrow' is looked up as the weekday it stands for
        query -= set(_words("today tonight tomorrow"))
    candidates = []
    for chunk in chunks:
        for label, fact in _split_facts(chunk):
            candidates.append((fact, set(_words(fact, drop)),
                               set(_words(f"{label} {chunk.heading}", drop))))
    if not query or not candidates:
        return []

    def weight(word: str) -> float:
        hits = sum(1 for _, body, head in candidates
                   if any(_same_word(word, w) for w in body | head))
        return math.log(1 + len(candidates) / hits) if hits else 0.0

    weights = {word: weight(word) for word in query}
    scored: list[tuple[float, int, str]] = []
    for order, (fact, body, head) in enumerate(candidates):
        score = 0.0
        for word, w in weights.items():
            if any(_same_word(word, b) for b in body):
                score += w
            elif any(_same_word(word, h) for h in head):
                score += w / 2
        if score > 0:
            scored.append((score, order, fact))
    scored.sort(key=lambda s: (-s[0], s[1]))
    best = scored[0][0] if scored else 0.0
    return [fact for score, _, fact in scored if score >= FACT_SCORE_RATIO * best]


def _day_words(question: str, today: date | None = None) -> tuple[list[str], list[str]]:
    """'today' / 'tomorrow' → the weekday to look up, and a line saying which day it is.

    A small model cannot work out the weekday itself; with it, the line for that day's hours
    is picked like any other.
    """
    today = today or date.today()
    words, facts = [], []
    for pattern, name, offset in ((r"today|tonight", "Today", 0), (r"tomorrow", "Tomorrow", 1)):
        if re.search(rf"\b({pattern})\b", question, re.I):
            day = _WEEKDAYS[(today + timedelta(days=offset)).weekday()]
            words.append(day)
            facts.append(f"{name} is {day.capitalize()}.")
    return words, facts


# --- keeping replies short ------------------------------------------------------------------

# A mark followed by a space, or a line break (a list the model starts is not for speaking).
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|(?<=[^\s:])(?=\n)")


def _sentence_ends(text: str) -> list[int]:
    """Offsets just past each complete sentence (its mark followed by a space)."""
    ends: dict[int, None] = {}
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith(".") and _abbreviation(text[: match.start()]):
            continue
        ends[match.end()] = None
    return list(ends)


def _abbreviation(head: str) -> bool:
    """Whether a '.' after ``head`` ends a short form ("Dr.", "a.m.", "A."), not a sentence."""
    last = head.rsplit(None, 1)[-1].lower() if head.split() else ""
    return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())


async def _brief(tokens: AsyncIterator[str], max_sentences: int) -> AsyncIterator[str]:
    """Tokens as they come until ``max_sentences`` sentences are complete; then the model stops.

    A sentence counts as complete once the space after its mark arrives ("$3." may go on as
    "$3.50"), so the stream is cut one token after it, at the mark.
    """
    text = ""
    try:
        async for token in tokens:
            sent = len(text)
            text += token
            ends = _sentence_ends(text)
            if len(ends) >= max_sentences:
                if (end := ends[max_sentences - 1]) > sent:
                    yield text[sent:end]
                return
            yield token
    finally:
        if isinstance(tokens, AsyncGenerator):
            await tokens.aclose()


async def _one(text: str) -> AsyncIterator[str]:
    yield text
