"""The agent's turn logic with a scripted LLM and a tiny in-memory knowledge base."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Generator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load_settings
from appliance.core import agent as agent_module
from appliance.core.agent import (
    DTMF_TOOLS,
    HISTORY_MESSAGES,
    Agent,
    Conversation,
    Tool,
    _brief,
    _day_words,
    _split_facts,
    detect_tool,
)
from appliance.core.workers import Workers
from appliance.engines.base import EngineInfo, KbChunk
from appliance.engines.fakes import FakeLlm

PRICES = KbChunk(
    id="prices:0", source="prices.md", distance=0.40, heading="Prices",
    text=("Prices below are what a patient pays without insurance.\n\n"
          "Exams and cleanings\n"
          "- New patient exam with full x-rays: $150\n"
          "- Routine adult cleaning (with check-up): $120\n"
          "- Crown (same-day CEREC crown): $1,200\n"
          "- Night guard for teeth grinding: $400"))
HOURS = KbChunk(
    id="hours:0", source="hours.md", distance=0.55, heading="Opening hours > Each day",
    text=("- Monday: open 8:00 am to 5:00 pm\n- Thursday: open 8:00 am to 5:00 pm\n"
          "- Saturday: open 9:00 am to 1:00 pm\n- Sunday: closed all day"))
FAQ = KbChunk(
    id="faq:0", source="faq.md", distance=0.50, heading="Frequently asked questions",
    text=("Are you taking new patients?\n"
          "Yes. We are accepting new patients of all ages from 3 years old. The first visit\n"
          "takes about 90 minutes.\n\n"
          "Who are the dentists?\n"
          "Dr. Maya Chen is the owner. Dr. Luis Ortega speaks Spanish."))


class FakeKb:
    """Returns the chunks it was given, nearest first, whatever the query."""

    def __init__(self, *chunks: KbChunk) -> None:
        self.info = EngineInfo(slot="kb", name="fake-kb", version="0")
        self.chunks = sorted(chunks, key=lambda c: c.distance)
        self.queries: list[str] = []

    def search(self, query: str, k: int) -> list[KbChunk]:
        self.queries.append(query)
        return self.chunks[:k]


def make_agent(tmp_path: Path, llm: FakeLlm | None = None, kb: FakeKb | None = None,
               **overrides: Any) -> Agent:
    settings = load_settings(environ={}, data_dir=str(tmp_path), **overrides)
    return Agent(settings, llm or FakeLlm(), kb, Workers.sized(1, 1))


def say(agent: Agent, conversation: Conversation, text: str) -> tuple[str, agent_module.Reply]:
    async def turn() -> tuple[str, agent_module.Reply]:
        reply = await agent.reply(conversation, text)
        return "".join([t async for t in reply.tokens]), reply
    return asyncio.run(turn())


# --- the prompt -------------------------------------------------------------------------------

def test_facts_go_in_the_user_message_after_a_constant_system_prompt(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, kb=FakeKb(PRICES))
    crown = agent.build_messages(Conversation("a"), "How much is a crown?", [PRICES])
    exam = agent.build_messages(Conversation("b"), "And a new patient exam?", [PRICES])

    assert crown[0].role == "system" and crown[0] == exam[0]  # the cacheable prefix
    assert crown[0].content == agent.settings.system_prompt
    assert "$" not in crown[0].content and "Harbor Dental" in crown[0].content
    user = crown[-1]
    assert user.role == "user"
    assert user.content.startswith("Facts:\n- Crown (same-day CEREC crown): $1,200")
    assert user.content.endswith("\n\nQuestion: How much is a crown?")
    assert "$150" in exam[-1].content and "$1,200" not in exam[-1].content


def test_history_is_trimmed_and_stays_fact_free(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, kb=FakeKb(PRICES))
    conversation = Conversation("call")
    for i in range(10):
        conversation.add("user", f"question {i}")
        conversation.add("assistant", f"answer {i}")
    messages = agent.build_messages(conversation, "How much is a crown?", [PRICES])

    assert len(messages) == 1 + HISTORY_MESSAGES + 1
    assert messages[1:-1] == conversation.history[-HISTORY_MESSAGES:]
    assert messages[1].content == "question 7"
    assert not any("Facts:" in m.content for m in messages[:-1])


def test_without_documents_the_question_goes_alone(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    messages = agent.build_messages(Conversation("c"), "Hello there", [])
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[-1].content == "Hello there"


def test_a_custom_persona_names_the_business(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, business_name="Bayside Vets",
                       persona="You answer the phone for {business}.")
    messages = agent.build_messages(Conversation("c"), "hi", [])
    assert messages[0].content == "You answer the phone for Bayside Vets."


# --- picking the facts ------------------------------------------------------------------------

def test_the_line_with_the_questions_words_comes_first(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    assert agent._facts([PRICES, HOURS], "are you open on saturday")[0] == (
        "Saturday: open 9:00 am to 1:00 pm")
    assert agent._facts([PRICES, HOURS], "how much is a night guard")[0] == (
        "Night guard for teeth grinding: $400")
    assert agent._facts([HOURS, PRICES], "what does the routine cleaning cost")[0] == (
        "Routine adult cleaning (with check-up): $120")


def test_word_forms_match() -> None:
    words = agent_module._words
    same = agent_module._same_word
    assert same(words("where do I park")[0], words("Free patient parking")[-1])
    assert same(words("where are you located")[0], words("Location and parking")[0])
    assert same(words("can I cancel")[0], words("a late cancellation")[-1])
    assert not same("car", "care") and words("the Harbor Dental", {"harbor", "dental"}) == []


def test_rare_words_outweigh_common_ones(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    facts = agent._facts([HOURS], "are you open sunday")
    assert facts[0] == "Sunday: closed all day"  # 'sunday' is rare, 'open' is everywhere


def test_the_facts_budget(tmp_path: Path) -> None:
    question = "x-rays routine crown grinding"  # four lines match one word each
    roomy = make_agent(tmp_path, kb_context_chars=1000)._facts([PRICES], question)
    assert len(roomy) == agent_module.MAX_FACTS
    tight = make_agent(tmp_path, kb_context_chars=60)._facts([PRICES], question)
    assert tight == roomy[:1]  # the best line goes in even when it alone is over budget
    assert sum(len(f) for f in make_agent(tmp_path, kb_context_chars=90)._facts(
        [PRICES], question)) <= 90


def test_weak_lines_are_left_out(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    facts = agent._facts([PRICES, HOURS], "how much is a crown")
    assert facts == ["Crown (same-day CEREC crown): $1,200"]


def test_a_question_without_content_words_gets_the_best_chunk(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    facts = agent._facts([HOURS, PRICES], "and what is it?")
    assert facts == ["Monday: open 8:00 am to 5:00 pm", "Thursday: open 8:00 am to 5:00 pm",
                     "Saturday: open 9:00 am to 1:00 pm"]


def test_a_follow_up_is_ranked_with_the_previous_question_only_if_needed(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    assert agent._facts([PRICES], "and for kids?", "how much is a crown and for kids?") == [
        "Crown (same-day CEREC crown): $1,200"]
    assert agent._facts([PRICES, HOURS], "and sunday?", "are you open saturday and sunday?")[
        0] == "Sunday: closed all day"


def test_faq_questions_label_their_answers(tmp_path: Path) -> None:
    facts = _split_facts(FAQ)
    assert facts[0] == ("Are you taking new patients?",
                        "Yes. We are accepting new patients of all ages from 3 years old.")
    assert ("Who are the dentists?", "Dr. Maya Chen is the owner.") in facts
    assert not any(fact.endswith("?") for _, fact in facts)
    assert make_agent(tmp_path)._facts([FAQ], "do you speak spanish") == [
        "Dr. Luis Ortega speaks Spanish."]


def test_today_and_tomorrow_become_weekdays() -> None:
    wednesday = date(2025, 1, 1)
    assert _day_words("what time do you open tomorrow", wednesday) == (
        ["thursday"], ["Tomorrow is Thursday."])
    assert _day_words("are you open today", wednesday) == (["wednesday"], ["Today is Wednesday."])
    assert _day_words("are you open on saturday", wednesday) == ([], [])


def test_tomorrow_picks_that_days_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "_day_words",
                        lambda q: _day_words(q, date(2025, 1, 1)))  # a Wednesday
    facts = make_agent(tmp_path)._facts([HOURS], "what time do you open tomorrow")
    assert facts[:2] == ["Tomorrow is Thursday.", "Thursday: open 8:00 am to 5:00 pm"]


# --- whole turns --------------------------------------------------------------------------------

def test_a_grounded_turn_asks_the_llm_with_the_facts(tmp_path: Path) -> None:
    llm = FakeLlm(["A crown", " is $1,200."])
    kb = FakeKb(PRICES, HOURS)
    agent = make_agent(tmp_path, llm, kb, answer_style="generative")
    text, reply = say(agent, Conversation("c"), "How much is a crown?")
    assert text == "A crown is $1,200." and reply.grounded and reply.tool is None
    assert [c.id for c in reply.sources] == ["prices:0", "hours:0"]
    assert "- Crown (same-day CEREC crown): $1,200" in llm.requests[0][-1].content
    assert not reply.guard.replaced


def test_an_invented_price_is_never_spoken(tmp_path: Path) -> None:
    """The model's "$54 to $180" for a $1,200 crown: the fact line is read instead."""
    llm = FakeLlm(["A crown", " is $54", " to $180.", " Call us."])
    agent = make_agent(tmp_path, llm, FakeKb(PRICES, HOURS), answer_style="generative")
    text, reply = say(agent, Conversation("c"), "How much is a crown?")
    assert text == "Crown (same-day CEREC crown): $1,200."
    assert "'$54' not in the sources" in reply.guard.replaced
    assert reply.guard.fallback == text


def test_a_wrong_name_in_a_second_sentence_is_cut(tmp_path: Path) -> None:
    llm = FakeLlm(["Yes, we speak Spanish.", " Ask for Dr. Smith."])
    agent = make_agent(tmp_path, llm, FakeKb(FAQ), answer_style="generative")
    text, reply = say(agent, Conversation("c"), "do you speak spanish")
    assert text.strip() == "Yes, we speak Spanish."
    assert "name 'Smith'" in reply.guard.replaced and reply.guard.fallback == ""


def test_the_extractive_answer_reads_the_best_fact_line(tmp_path: Path) -> None:
    llm = FakeLlm()
    agent = make_agent(tmp_path, llm, FakeKb(PRICES, HOURS))
    text, reply = say(agent, Conversation("c"), "How much is a crown?")
    assert text == "Crown (same-day CEREC crown): $1,200." and reply.grounded
    assert llm.requests == []  # no model in the way


def test_below_the_relevance_threshold_the_agent_declines(tmp_path: Path) -> None:
    llm = FakeLlm()
    far = KbChunk(id="x", text="- Crown: $1,200", source="prices.md", distance=0.95)
    agent = make_agent(tmp_path, llm, FakeKb(far), kb_max_distance=0.75)
    text, reply = say(agent, Conversation("c"), "what's the weather on mars")
    assert text == agent.unknown_answer and not reply.grounded
    assert llm.requests == []


def test_close_documents_without_a_shared_word_decline(tmp_path: Path) -> None:
    llm = FakeLlm()
    agent = make_agent(tmp_path, llm, FakeKb(PRICES, HOURS))
    text, reply = say(agent, Conversation("c"), "do you sell hearing aids")
    assert text == agent.unknown_answer and not reply.grounded
    assert llm.requests == []


def test_the_decline_offers_a_transfer_when_there_is_a_number(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, transfer_number="+15550100000")
    assert "transfer you" in agent.unknown_answer
    assert "take a message" in make_agent(tmp_path).unknown_answer


class HeldLlm(FakeLlm):
    """Holds its stream after the fifth token until the test lets it go, so whether the model
    was stopped does not depend on which thread runs first."""

    def __init__(self, tokens: list[str]) -> None:
        super().__init__(tokens)
        self.hold = threading.Event()

    def _stream(self, max_tokens: int) -> Generator[str, None, None]:
        inner = super()._stream(max_tokens)
        try:
            for index, token in enumerate(inner):
                yield token
                if index == 4:
                    self.hold.wait(30)
        finally:
            inner.close()


def test_the_reply_stops_after_two_sentences_and_stops_the_model(tmp_path: Path) -> None:
    llm = HeldLlm(["Dr. Chen", " is in.", " She works", " Monday.", " Also", " Tuesday.", " And"])
    agent = make_agent(tmp_path, llm)
    text, _ = say(agent, Conversation("c"), "is doctor chen in")
    assert text == "Dr. Chen is in. She works Monday."
    llm.hold.set()
    deadline = time.monotonic() + 30
    while llm.active and time.monotonic() < deadline:  # the worker closes the stream
        time.sleep(0.01)
    assert llm.active == 0 and llm.produced == 6  # one token past the cut, never the rest


def test_a_reply_without_a_sentence_end_streams_whole(tmp_path: Path) -> None:
    llm = FakeLlm(["We open", " at 9:00", " am"])
    text, _ = say(make_agent(tmp_path, llm), Conversation("c"), "when do you open")
    assert text == "We open at 9:00 am"


@pytest.mark.parametrize("tokens, expected", [
    (["It is $3", ".50 on", " Monday.", " Bye."], ["It is $3", ".50 on", " Monday."]),
    (["Friday: 8 am", "\nMonday: 1 pm"], ["Friday: 8 am"]),  # a list is not for speaking
    (["Yes.", " We", " are open. More"], ["Yes.", " We", " are open."]),
])
def test_brief_cuts_at_the_sentence_mark(tokens: list[str], expected: list[str]) -> None:
    async def run() -> list[str]:
        async def stream() -> AsyncIterator[str]:
            for token in tokens:
                yield token
        return [t async for t in _brief(stream(), 2 if "Yes." in tokens else 1)]
    assert asyncio.run(run()) == expected


def test_history_and_short_follow_ups_reach_retrieval(tmp_path: Path) -> None:
    kb = FakeKb(PRICES)
    agent = make_agent(tmp_path, FakeLlm(["It is $1,200."]), kb)
    conversation = Conversation("c")
    say(agent, conversation, "how much is a crown")
    conversation.add("user", "how much is a crown")
    say(agent, conversation, "and the exam?")
    assert kb.queries == ["how much is a crown", "how much is a crown and the exam?"]


# --- tools ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, can_transfer, tool", [
    ("Goodbye!", False, Tool.END_CALL),
    ("no thanks, that's all", False, Tool.END_CALL),
    ("Can I talk to a real person?", True, Tool.TRANSFER),
    ("Can I talk to a real person?", False, None),
    ("I want to say bye to my old dentist and switch to you, how do I do that?", False, None),
    ("How much is a crown?", True, None),
])
def test_detect_tool(text: str, can_transfer: bool, tool: Tool | None) -> None:
    assert detect_tool(text, can_transfer=can_transfer) is tool


def test_a_tool_turn_skips_retrieval_and_the_llm(tmp_path: Path) -> None:
    llm, kb = FakeLlm(), FakeKb(PRICES)
    agent = make_agent(tmp_path, llm, kb, transfer_number="+15550100000")
    text, reply = say(agent, Conversation("c"), "let me speak to a human please")
    assert reply.tool is Tool.TRANSFER and text == agent.phrase_for(Tool.TRANSFER)
    assert kb.queries == [] and llm.requests == []
    assert DTMF_TOOLS["0"] is Tool.TRANSFER


# A request to reach a person transfers; a sentence that merely has "someone" or "speak to" in
# it is a question for the agent.
ASKS_FOR_A_PERSON = [
    "Can I talk to a real person?",
    "can i talk to a real person please",
    "Operator.",
    "operator, please",
    "Representative!",
    "Human please.",
    "Agent.",
    "A real person, please.",
    "Um, operator",
    "Let me speak to a human.",
    "let me speak to a representative",
    "Let me speak to someone.",
    "Let me talk to somebody real.",
    "I'd like to speak to someone.",
    "I would like to talk to a person about my bill.",
    "I want to talk to a person.",
    "I need to speak with a live agent.",
    "Could I speak with somebody?",
    "May I speak to a staff member?",
    "Can we chat with a human?",
    "I'd rather talk to a person.",
    "I have to talk to the manager.",
    "Can I talk to someone about my bill?",
    "Speak to a human.",
    "Please connect me with someone.",
    "Is there a human I can talk to?",
    "Is there someone I can speak with?",
    "I want a real person.",
    "I need an operator.",
    "Get me a human.",
    "Just give me an operator.",
    "Transfer me, please.",
    "Can you transfer me to someone?",
    "Please transfer my call.",
    "Could you put me through to the front desk?",
    "Connect me to reception.",
    "I\u2019d like to talk to the receptionist.",
]

QUESTIONS_FOR_THE_AGENT = [
    "Can I speak to Dr. Chen about billing?",
    "can someone tell me your hours",
    "Can I talk to Dr. Patel about my X-rays?",
    "I'd like to speak to the dentist about my crown.",
    "Can I speak to the hygienist about sensitivity?",
    "Are you a real person?",
    "Does someone speak Spanish there?",
    "Who should I talk to about insurance?",
    "who do i talk to about a billing question",
    "Who can I speak with about a refund?",
    "I spoke to someone yesterday about my bill.",
    "I talked to a person at the desk last week.",
    "Someone told me you're open on Sundays.",
    "Somebody recommended you to me.",
    "Can somebody check if my crown is ready?",
    "Can someone help me book a cleaning?",
    "Can you talk to me about whitening?",
    "I want to talk to you about my appointment.",
    "Do you transfer records to other dentists?",
    "Can you transfer my appointment to Friday?",
    "My travel agent booked the wrong date.",
    "Is the receptionist there on Saturday?",
    "Will a real person call me back?",
    "Does a human read these messages?",
    "How much does it cost to speak to a specialist?",
    "Is there someone on call at night?",
    "Does anybody there accept Delta Dental?",
    "Can you speak to my insurance company for me?",
    "I need someone to look at my tooth.",
    "Please tell someone my appointment is cancelled.",
    "I have to talk to my husband first.",
    "Thanks, I will talk to someone at work about it.",
    "Can you give me someone's email for billing?",
    "Do you have a representative for Medicaid questions?",
    "What's the operator's fee for parking?",
    "Is it a person or a machine that answers?",
]


@pytest.mark.parametrize("text", ASKS_FOR_A_PERSON)
def test_a_request_for_a_person_transfers(text: str) -> None:
    assert detect_tool(text, can_transfer=True) is Tool.TRANSFER


@pytest.mark.parametrize("text", QUESTIONS_FOR_THE_AGENT)
def test_a_question_mentioning_people_does_not_transfer(text: str) -> None:
    assert detect_tool(text, can_transfer=True) is not Tool.TRANSFER


# --- price and phone words, common-word questions (issue 16) --------------------------------

POLICIES = KbChunk(
    id="policies:0", source="policies.md", distance=0.5, heading="Policies > Cancellations",
    text=("Please give us 24 hours' notice to cancel or move an appointment. Missed "
          "appointments without notice are charged a $40 fee."))
CONTACT = KbChunk(
    id="contact:0", source="practice.md", distance=0.8, heading="Practice > Address",
    text=("We are at 48 Orchard Road, Millbrook, next to the library. The number 7 bus stops "
          "outside.\n\nContact\nCall us on (555) 318-2270. Email us at desk@example.test."),
    metadata={"best_distance": 0.8, "coverage": 0.0})


def test_a_price_word_alone_does_not_pick_a_line_about_something_else(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    assert agent._facts([POLICIES], "how much do you charge for braces") == []
    assert agent._facts([POLICIES], "what does it cost to cancel")[0] == (
        "Missed appointments without notice are charged a $40 fee.")


@pytest.mark.parametrize("question, answer", [
    ("where are you", "We are at 48 Orchard Road"),
    ("what's your phone number", "Call us on (555) 318-2270."),
])
def test_a_question_of_common_words_gets_the_line_stating_its_kind(
        tmp_path: Path, question: str, answer: str) -> None:
    # Far in meaning and no word of it in the documents: the relevance test alone declines.
    agent = make_agent(tmp_path, kb=FakeKb(CONTACT))
    said, reply = say(agent, Conversation("c"), question)
    assert said.startswith(answer) and reply.grounded


@pytest.mark.parametrize("question", ["who are you", "how much is it", "what's the bus fare"])
def test_a_common_word_question_without_a_plain_kind_is_still_declined(
        tmp_path: Path, question: str) -> None:
    agent = make_agent(tmp_path, kb=FakeKb(CONTACT))
    said, reply = say(agent, Conversation("c"), question)
    assert not reply.grounded and said == agent.unknown_answer


def test_plural_ies_is_the_same_word() -> None:
    assert agent_module._words("emergencies companies") == ["emergency", "company"]
