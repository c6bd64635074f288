"""The agent's brain for one turn: tools, retrieval, prompt, streamed reply.

Every front door (Media Streams calls, ConversationRelay, ``appliance ask``) goes through
:meth:`Agent.reply`, so what a business checks with ``ask`` is exactly what callers get.

The default model is tiny (SmolLM2-135M): handed the one or two lines that hold the answer it
still picks the wrong one or invents a price. So a turn retrieves chunks (hybrid dense + BM25,
kb/hybrid.py), decides whether they are about the question at all (kb/relevance.py), picks the
few fact lines that match the caller's words, and by default reads the best one out
(``answer_style = "extractive"``). With ``"generative"`` the model phrases the answer from those
lines, and every sentence it says must pass the grounding check (core/grounding.py) or is
replaced by the fact line. Measured with ``appliance eval`` (README, "Answers").
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
from appliance.core import answer_types, tool_choice
from appliance.core.answer_guard import GuardLog, guarded, spoken_fact
from appliance.core.grounding import Support
from appliance.core.tool_choice import Choice
from appliance.core.workers import Workers, iterate_in, run_in
from appliance.engines.base import ChatMessage, KbChunk, KnowledgeBase, Llm, PromptUsage
from appliance.kb import relevance
from appliance.kb.query import STOP_WORDS as _STOP_WORDS
from appliance.kb.query import expand
from appliance.messages.flow import Keyed, MessageFlow, TakenMessage
from appliance.store.metrics import TurnMetrics

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 6  # recent messages kept verbatim; older ones fall out of the prompt
MAX_FACTS = 3  # fact lines per turn: more distract a small model
FACT_SCORE_RATIO = 0.5  # lines scoring below this share of the best line are left out
# Share of the strongest word's weight for stating the kind of fact asked: 0.6 until price and
# phone words stopped counting as topic words; then "what does it cost to cancel" needed 0.8 to
# prefer "Missed appointments ... $40 fee" (under "Cancellations") over the notice line; 0.8
# and 1.0 broke no tuning question.
TYPE_BONUS = 0.8
MAX_SENTENCES = 2  # a caller hears one or two sentences, then may ask on


class Tool(enum.Enum):
    END_CALL = "end_call"
    TRANSFER = "transfer"


_END_CALL = re.compile(
    r"\b(good ?bye|bye|hang up|that'?s all|that is all|nothing else|no,? thanks?)\b", re.I)
# A transfer needs a request to reach a person, not any sentence with "someone" or "speak to":
# "Can I speak to Dr. Chen about billing?" and "can someone tell me your hours" are questions
# for the agent. The phrasings each way are in tests/unit/test_agent.py.
_STAFF = (r"(?:(?:a|an|the|some|your|one\s+of\s+your)\s+)?(?:(?:real|live|actual)\s+)?"
          r"(?:human(?:\s+being)?|person|someone|somebody|anyone|anybody|representative|rep|"
          r"operator|agent|receptionist|staff(?:\s+member)?|member\s+of\s+(?:your\s+)?staff|"
          r"front\s+desk|reception|manager)\b(?!')")  # not "someone's number"
_WANT = (r"(?:\b(?:can|could|may|might)\s+(?:i|we)\s+(?:please\s+)?(?:just\s+)?|\blet\s+me\s+|"
         r"\b(?:i|we)(?:'d|\s+would)\s+(?:like|love|prefer|rather)\s+(?:to\s+)?|"
         r"\b(?:i|we)\s+(?:really\s+)?(?:want|need|wanna|have)\s+(?:to\s+)?|^(?:please\s+)?|"
         r"\bplease\s+)")
_TALK = r"(?:speak|talk|chat)\s+(?:to|with)"
_TRANSFER_RULES = tuple(re.compile(rule, re.I) for rule in (
    _WANT + _TALK + r"\s+" + _STAFF,  # "can I talk to a real person", "let me speak to someone"
    _STAFF + r"\s+(?:i|we)\s+(?:can|could)\s+" + _TALK + r"\b",  # "is there someone I can ..."
    r"\btransfer\s+(?:me|my\s+call|this\s+call)\b|\b(?:put|patch)\s+me\s+through\b|"
    r"\bconnect\s+me\s+(?:to|with)\b",  # asking for the transfer itself
    r"\b(?:get|give|find)\s+me\s+" + _STAFF,
    r"\b(?:i|we)\s+(?:want|need|wanna|(?:'d|\s+would)\s+like)\s+(?:a|an|the)\s+"
    r"(?:(?:real|live|actual)\s+)?(?:human|person|representative|operator|agent|receptionist)\b",
    # the whole utterance is the request: "Operator.", "a real person, please"
    r"^(?:(?:um|uh|yes|yeah|ok|okay|hi|hello|just)[,\s]+)*(?:an?\s+|the\s+)?"
    r"(?:(?:real|live|actual)\s+)?(?:human|person|operator|representative|rep|agent|"
    r"receptionist)(?:[,\s]+(?:please|now))*[\s.!?]*$",
))
DTMF_TOOLS = {"0": Tool.TRANSFER}
_TOOLS = {Choice.END_CALL: Tool.END_CALL, Choice.TRANSFER: Tool.TRANSFER}


def detect_tool(text: str, *, can_transfer: bool) -> Tool | None:
    """Intent rules for the two call-control tools.

    The tiny default model cannot call functions reliably, so the caller's own words decide;
    a false 'end call' is worse than none, so it needs a short utterance.
    """
    if can_transfer and wants_a_person(text):
        return Tool.TRANSFER
    if _END_CALL.search(text) and len(text.split()) <= 8:
        return Tool.END_CALL
    return None


def wants_a_person(text: str) -> bool:
    """Whether the caller asks to be put through to a person (see ``_TRANSFER_RULES``)."""
    said = " ".join(text.replace("\u2019", "'").split()).strip()
    return any(rule.search(said) for rule in _TRANSFER_RULES)


@dataclass
class Conversation:
    """What the agent remembers of one call: the latest ``max_messages`` only, so an hours-long
    call holds bounded memory (the prompt keeps only what fits in the context anyway)."""

    session_id: str
    history: list[ChatMessage] = field(default_factory=list)
    message: MessageFlow | None = None  # a message being taken
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
    guard: GuardLog = field(default_factory=GuardLog)  # filled as ``tokens`` streams
    message: TakenMessage | None = None  # a message the caller just confirmed: store it
    prompt: PromptUsage | None = None  # the model's prompt reading, filled as ``tokens`` streams

    @classmethod
    def saying(cls, text: str) -> Reply:
        """A fixed sentence as a reply (a keyed number read back)."""
        return cls(tokens=_one(text))

    def measure(self, metrics: TurnMetrics) -> None:
        """The model's prompt reading into the turn's metrics, once ``tokens`` has run (a server
        reports it with its last chunk); nothing for a reply the model did not write."""
        if self.prompt is not None and self.prompt.tokens is not None:
            self.prompt.fill(metrics)


@dataclass(frozen=True)
class KeyPress:
    """What a key press on the phone pad means for the call.

    ``tool``: a call-control tool ('0': a person). ``keyed``: a call-back number entry that just
    ended (or restarted): say ``keyed.said`` as a turn of its own. ``wait_s``: digits are being
    keyed, and the entry ends by itself after this long without another key.
    """

    tool: Tool | None = None
    keyed: Keyed | None = None
    wait_s: float | None = None


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

    def press(self, conversation: Conversation, key: str, now: float) -> KeyPress:
        """A key press: a digit of the call-back number while a message asks for it (so '0'
        is then not a transfer), else the key's tool if it has one."""
        flow = conversation.message
        if flow is None or not flow.takes_keys:
            return KeyPress(tool=self.dtmf_tool(key))
        return KeyPress(keyed=flow.press(key, now), wait_s=flow.wait_s(now))

    def key_pause(self, conversation: Conversation, now: float) -> KeyPress:
        """The pause after the last key: the number keyed so far is complete, if there is one."""
        flow = conversation.message
        keyed = flow.pause(now) if flow is not None else None
        return KeyPress(keyed=keyed, wait_s=flow.wait_s(now) if flow and not keyed else None)

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
        if tool is None and (flow := conversation.message) is not None:
            return self._message_step(conversation, flow, text)
        if tool is None:
            choice = await self.choose(conversation, text)
            if choice is Choice.TAKE_MESSAGE:
                conversation.message = MessageFlow()
                return Reply(tokens=_one(conversation.message.opening()))
            tool = _TOOLS.get(choice) if choice else None
        if tool is not None:
            return Reply(tokens=_one(self.phrase_for(tool)), tool=tool)
        return await self._answer(conversation, text)

    async def prepare(self, conversation: Conversation, text: str) -> Reply | None:
        """:meth:`reply` where working it out changes nothing (the turn is not confirmed yet:
        core/speculation.py); None for a tool or a take-a-message step, which must wait."""
        if conversation.message is not None or await self.choose(conversation, text) is not None:
            return None
        return await self._answer(conversation, text)

    async def _answer(self, conversation: Conversation, text: str) -> Reply:
        """An answer from the documents, or the decline."""
        started = time.monotonic()
        chunks = await self.retrieve(conversation, text)
        retrieval_s = time.monotonic() - started
        if self.kb is None:  # nothing to ground on: serve warned at start-up
            return self._generate(conversation, text, [], [], retrieval_s)
        scope = relevance.decide(chunks, self.settings)
        facts = self._facts(chunks, text, self.search_text(conversation, text))
        if not (scope.relevant or self._asks_only_a_kind(text)) or not facts:
            # Nothing in the documents is about this: any answer would be made up.
            log.info("declining: %s", scope.reason if not scope.relevant
                     else "no fact line matches the question's words")
            return Reply(tokens=_one(self.unknown_answer), sources=chunks,
                         retrieval_s=retrieval_s, grounded=False)
        if self.settings.answer_style == "extractive":
            return Reply(tokens=_one(_extract(facts, text)), sources=chunks,
                         retrieval_s=retrieval_s)
        return self._generate(conversation, text, chunks, facts, retrieval_s)

    def _asks_only_a_kind(self, text: str) -> bool:
        """"where are you", "what's your phone number": no word says what about, so the share
        of words found (kb/relevance.py) says nothing; the kind of fact asked is the question,
        and a line stating it (picked through the paraphrase map) is the answer."""
        business = set(_words(self.settings.business_name))
        return not _topic(text, business) and bool(answer_types.asked(text) & _PLAIN_KINDS)

    def _generate(self, conversation: Conversation, text: str, chunks: list[KbChunk],
                  facts: list[str], retrieval_s: float) -> Reply:
        """The model's reply, spoken only as far as every fact in it is in the sources.

        Without a knowledge base there are no sources to check against (``serve`` warns that
        answers are not grounded), and the reply is only kept short.
        """
        messages = self.build_messages(conversation, text, chunks)
        prompt = PromptUsage()
        tokens = iterate_in(self.workers.llm, lambda: self.llm.stream_chat(
            messages, max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature, session_id=conversation.session_id,
            usage=prompt))
        if self.kb is None:
            return Reply(tokens=_brief(tokens, MAX_SENTENCES), retrieval_s=retrieval_s,
                         prompt=prompt)
        support = Support.of([*facts, *(m.content for m in conversation.history), text,
                              self.settings.business_name, self.settings.transfer_number])
        fallback = _extract(facts, text) if facts else self.unknown_answer
        guard = GuardLog()
        return Reply(tokens=guarded(_brief(tokens, MAX_SENTENCES), support, fallback, guard),
                     sources=chunks, retrieval_s=retrieval_s, guard=guard, prompt=prompt)

    async def choose(self, conversation: Conversation, text: str) -> Choice | None:
        """Hang up, transfer, take a message, or none: the model's choice where its engine
        declares tool calling, else (and whenever that fails) the rule-based intents."""
        if self.llm.tool_calling:
            offered = tool_choice.tools(can_transfer=self.can_transfer)
            asked = tool_choice.messages(self.settings.system_prompt, conversation.history, text)
            try:
                call = await run_in(self.workers.llm, lambda: self.llm.choose_tool(
                    asked, offered, session_id=conversation.session_id))
            except Exception as err:  # noqa: BLE001 - a failed choice must not fail the turn
                log.warning("the model could not choose a tool (%s); the rules decide", err)
            else:
                return tool_choice.meaning(call, offered)
        last = next((m.content for m in reversed(conversation.history)
                     if m.role == "assistant"), "")
        if MessageFlow.wanted(text, offered="take a message" in last):
            return Choice.TAKE_MESSAGE
        rule = detect_tool(text, can_transfer=self.can_transfer)
        return next((c for c, t in _TOOLS.items() if t is rule), None) if rule else None

    def _message_step(self, conversation: Conversation, flow: MessageFlow, text: str) -> Reply:
        """The next take-a-message step (the caller asked for it or accepted the offer)."""
        said, taken = flow.answer(text)
        if taken is not None:
            conversation.message = None
        return Reply(tokens=_one(said), message=taken)

    def build_messages(self, conversation: Conversation, text: str,
                       chunks: list[KbChunk]) -> list[ChatMessage]:
        """System persona, recent history, then the facts and the question as the user message.

        Order matters for speed as well as answers: the constant persona comes first, so
        llama.cpp reuses it from the cache. The facts go in the user message, right before the
        question (a small model follows them there far better than in the system prompt), and
        the history stays fact-free; so the cache, which ends with the last question as asked
        (facts included), matches only up to that question, and the previous question and
        answer are read again (measured on the bench's prompts: 90–127 of 159–212 tokens read
        on turns 2–4, 32 reused on turn 2; README, "LLM first token, split").
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
        # Paraphrases last: "what's your address" → "located location street".
        tries = (question, follow_up, expand(question))
        worded = [t for t in dict.fromkeys(tries) if t and _topic(t, business)]
        wanted = answer_types.asked(question)
        stating = [fact for chunk in chunks for _, fact in _split_facts(chunk)
                   if self._asks_only_a_kind(question) and wanted & answer_types.offered(fact)]
        if stating:  # "what's your phone number": the lines that state one, best chunk first
            lines = stating
        elif worded or extra:
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


def _message_wanted(conversation: Conversation, text: str) -> bool:
    """The caller asks to leave a message, or accepts the offer of one."""
    last = next((m.content for m in reversed(conversation.history) if m.role == "assistant"), "")
    return MessageFlow.wanted(text, offered="take a message" in last)


# --- picking fact lines ---------------------------------------------------------------------

_SUFFIXES = ("ations", "ation", "ions", "ion", "ings", "ing", "ed", "es", "s")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# "cost(s)", "price(s)", "charge(s)/charged", "fee(s)", "rate(s)", "phone", "number(s)", as
# ``_words`` stems them: the words with which ``answer_types`` hears a price or phone question.
_KIND_WORDS = frozenset({"cost", "price", "pric", "charge", "charg", "fee", "rate", "phone",
                         "number"})
# Kinds a question can ask with common words alone; "who" or "how much" alone is a follow-up
# or says nothing ("who are you" is not a question about the staff).
_PLAIN_KINDS = frozenset({"place", "phone", "email", "time"})
_BULLET = re.compile(r"[-*•]\s+|\d+[.)]\s+")
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "ave", "vs", "etc", "e.g", "i.e",
                            "a.m", "p.m"})


def _words(text: str, drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Content words, lower-case, roughly stemmed ("located" and "location" → "locat")."""
    out = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if len(word) < 2 or word in _STOP_WORDS or word in drop:
            continue
        if word.endswith("ies") and len(word) > 5:  # "emergencies" is "emergency"
            out.append(word[:-3] + "y")
            continue
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= (3 if suffix == "s" else 4):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


def _topic(text: str, drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The content words that say what a question is about, not which kind of fact it wants.

    "how much do you charge for braces" is about braces: "charge" only says a price is wanted,
    and matched on its own it picked "Missed appointments ... are charged a $40 fee". The kind
    is weighed by ``answer_types`` (a tie-breaker) instead.
    """
    return [w for w in _words(text, drop) if w not in _KIND_WORDS]


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
    outweighs 'open'), half as much when only the line's section heading has it (in full when
    that label is an FAQ question: it is as specific as the answer), and a quarter more when
    the line and its own label both have it: "where do I park" wants the line under
    "Parking", not the one about the accessible spaces under "Accessibility". A line that states the
    kind of fact asked for (a price for "how much") gains 0.8 of the strongest word's weight.
    """
    query = set(_topic(question, drop)) | set(extra)
    if extra:  # 'tomorrow' is looked up as the weekday it stands for
        query -= set(_words("today tonight tomorrow"))
    candidates = []
    for chunk in chunks:
        for label, fact in _split_facts(chunk):
            candidates.append((fact, set(_words(fact, drop)),
                               set(_words(f"{label} {chunk.heading}", drop)),
                               set(_words(label, drop)), 1.0 if label.endswith("?") else 0.5))
    if not query or not candidates:
        return []

    def weight(word: str) -> float:
        hits = sum(1 for _, body, head, _, _ in candidates
                   if any(_same_word(word, w) for w in body | head))
        return math.log(1 + len(candidates) / hits) if hits else 0.0

    weights = {word: weight(word) for word in query}
    wanted, top = answer_types.asked(question), max(weights.values(), default=0.0)
    scored: list[tuple[float, int, str]] = []
    for order, (fact, body, head, own, head_weight) in enumerate(candidates):
        score = 0.0
        for word, w in weights.items():
            if any(_same_word(word, b) for b in body):
                if any(_same_word(word, h) for h in own):  # under the heading asked about
                    score += w * head_weight / 2
                score += w
            elif any(_same_word(word, h) for h in head):
                score += w * head_weight
        if score > 0 and wanted & answer_types.offered(fact):
            score += TYPE_BONUS * top
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


def _extract(facts: list[str], question: str) -> str:
    """The best fact line read out, after the line naming the weekday asked about, if any."""
    return " ".join(spoken_fact(f) for f in facts[:len(_day_words(question)[1]) + 1])


async def _one(text: str) -> AsyncIterator[str]:
    yield text
