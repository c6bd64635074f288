"""Grounded answers through the real default LLM (SmolLM2-135M) and the sample kb/.

Each question is one fresh turn through :meth:`Agent.reply`, the path calls and ``appliance ask``
use: retrieval, fact-line selection, the prompt, the LLM, the sentence cut. Run with ``-s`` to
see the answers and the time to first token.

What the tiny model can and cannot do (measured with the default prompt, greedy decoding, on
the 40 evaluation questions of kb_questions.toml that have a checkable fact): the fact was in
the reply for 30 of 40 as written there (lower case) and for 25 of 40 as Whisper writes them
(capitalised, with "?"); the previous prompt managed 9 of 40. Questions the model still gets
wrong, so they are not asserted here: "are you open on saturday" ("No, I'm not." — it answers
for itself, not the practice), "does anyone there speak spanish" ("No, no one speaks
Spanish."), "how much does a crown cost" (talks about crowns, no price), "How much is a
cleaning?" (picks the $250 deep cleaning 3 times in 5 when capitalised; right in lower case),
"is there a fee if i miss my appointment" (right in a fresh call, "No, there is no fee" after
some earlier turns). The questions below gave the fact in every context tried (cold cache,
after other calls, lower case and capitalised).

Since the grounding guard (issue 16) the default ``answer_style`` is "extractive": the best
fact line is read out and the model is not asked (on the eval/ tuning businesses the model's
own sentences gave the right fact for 62 % and 48 % of questions, the fact line for 95 % and
86 %). These tests run that default; tests/e2e/test_eval.py also runs the generative style.

Declining: the model itself does not decline reliably (it says "No, I'm not" to most yes/no
questions and makes up answers to near-topic ones), so what keeps it from inventing is the
agent's two gates, both tested here on the real embeddings: no document close enough, or no
fact line sharing a word with the question.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import msgspec
import pytest

from appliance.config import load_settings
from appliance.core.agent import Agent, Conversation, Reply
from appliance.core.workers import Workers
from appliance.models.resolve import resolve_models
from appliance.wiring import load_llm, open_knowledge_base

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# (question, the fact from kb/ that must be heard, the document it comes from)
GROUNDED = [
    ("What's the price for a new patient exam?", r"\$?150\b", "prices.md"),
    ("How much is teeth whitening?", r"\b450\b", "prices.md"),
    ("how often should i get a checkup", r"\b(six|6) months\b", "faq.md"),
    ("who handles billing questions", r"\bTanya\b", "team.md"),
    ("where do i park", r"\bPier Lane\b|\bMarina Plaza\b", "location.md"),
    ("what time do you close on friday", r"\b2(:00)? ?p\.?m\b", "hours.md"),
]
# Off topic: nothing in kb/ is close enough.
OUT_OF_SCOPE = ["what's the weather on mars", "can you recommend a good pizza place",
                "what's the capital of australia"]
# Dental-sounding, close in embedding space, yet kb/ has no line about them.
NEAR_SCOPE = ["do you sell hearing aids", "are you hiring dental assistants"]

MAX_PROMPT_TOKENS = 180  # ~0.7 s to read on this CPU with nothing cached; measured mean ~100


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("grounded")
    settings = load_settings(environ={}, data_dir=str(tmp / "data"), kb_dir=str(ROOT / "kb"))
    workers = Workers.sized(1, 1)
    kb = open_knowledge_base(settings)  # ingests kb/ into the empty data dir
    assert kb is not None
    agent = Agent(settings, load_llm(settings, instances=1), kb, workers)
    yield agent
    workers.shutdown()


def ask(agent: Agent, text: str) -> tuple[str, Reply, float]:
    """One turn in a fresh call: the answer, the reply, seconds to the first token."""
    async def turn() -> tuple[str, Reply, float]:
        started = time.monotonic()
        reply = await agent.reply(Conversation(session_id=f"test-{text}"), text)
        first, parts = 0.0, []
        async for token in reply.tokens:
            first = first or time.monotonic() - started
            parts.append(token)
        return "".join(parts).strip(), reply, first
    return asyncio.run(turn())


def numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text.replace(",", "")))


TTFT: list[float] = []


@pytest.mark.parametrize("question, fact, document", GROUNDED)
def test_the_fact_from_the_documents_is_in_the_reply(agent: Agent, question: str, fact: str,
                                                     document: str) -> None:
    answer, reply, ttft = ask(agent, question)
    TTFT.append(ttft)
    prompt = agent.build_messages(Conversation("check"), question, reply.sources)[-1].content
    print(f"\n{question!r} → {answer!r} (first token {ttft:.2f} s)")
    assert reply.grounded and reply.tool is None
    assert document in {c.source for c in reply.sources}
    assert re.search(fact, prompt, re.I), f"retrieval did not hand over the fact:\n{prompt}"
    assert re.search(fact, answer, re.I), f"{answer!r} lacks {fact!r}; the prompt:\n{prompt}"
    invented = numbers(answer) - numbers(prompt)
    assert not invented, f"numbers not in the facts: {invented} in {answer!r}"
    assert len(re.findall(r"[.!?](\s|$)", answer)) <= 2  # one or two sentences


@pytest.mark.parametrize("question", OUT_OF_SCOPE + NEAR_SCOPE)
def test_out_of_scope_questions_are_declined(agent: Agent, question: str) -> None:
    answer, reply, _ = ask(agent, question)
    print(f"\n{question!r} → {answer!r}")
    assert answer == agent.unknown_answer and not reply.grounded
    assert not numbers(answer)


def test_the_prompt_stays_short(agent: Agent) -> None:
    """Prompt tokens are the time to first token on a CPU; count them with the model's vocab."""
    vocab = llama_cpp.Llama(model_path=str(resolve_models(agent.settings).llm), vocab_only=True,
                            verbose=False)
    sizes = []
    for question, _, _ in GROUNDED:
        _, reply, _ = ask(agent, question)
        messages = agent.build_messages(Conversation("size"), question, reply.sources)
        chatml = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        sizes.append(len(vocab.tokenize(chatml.encode(), add_bos=False, special=True)))
    if TTFT:
        print(f"\nprompt tokens {sizes}; first token median {statistics.median(TTFT):.2f} s, "
              f"max {max(TTFT):.2f} s over {len(TTFT)} answers")
    assert max(sizes) <= MAX_PROMPT_TOKENS, sizes


def test_a_calls_second_answer_reads_the_persona_from_the_cache(agent: Agent) -> None:
    """Generated answers in one call: the second prompt starts with the persona the first one
    left in the model's cache, so those tokens are not read again (counted by llama.cpp)."""
    generative = Agent(msgspec.structs.replace(agent.settings, answer_style="generative"),
                       agent.llm, agent.kb, agent.workers)
    conversation = Conversation(session_id="test-reuse")

    async def turn(text: str) -> Reply:
        reply = await generative.reply(conversation, text)
        said = "".join([token async for token in reply.tokens]).strip()
        conversation.add("user", text)
        conversation.add("assistant", said)
        return reply

    first, second = (asyncio.run(turn(q)) for q in ("How much is teeth whitening?",
                                                    "What time do you close on friday?"))
    vocab = llama_cpp.Llama(model_path=str(resolve_models(agent.settings).llm), vocab_only=True,
                            verbose=False)
    persona = vocab.tokenize(f"<|im_start|>system\n{agent.settings.system_prompt}<|im_end|>\n"
                             .encode(), add_bos=False, special=True)
    for reply in (first, second):
        usage = reply.prompt
        assert usage is not None and usage.tokens and usage.evaluated
        assert usage.reused is not None and usage.reused + usage.evaluated == usage.tokens
    assert second.prompt is not None and second.prompt.reused is not None
    assert second.prompt.reused >= len(persona)
