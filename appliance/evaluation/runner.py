"""Run every business's questions through ``appliance ask``'s own turn code and score them.

Each business gets its own data dir (a fresh knowledge base ingested from its documents) and
its own name in the persona; the LLM is loaded once and shared. Follow-up questions are asked
in one call right after the question they follow, as a caller would.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from appliance.cli.ask_cmd import answer
from appliance.config import Settings
from appliance.core.agent import Agent, Conversation
from appliance.core.grounding import Support
from appliance.core.workers import Workers
from appliance.engines.base import Llm
from appliance.evaluation.dataset import Business
from appliance.evaluation.scoring import Verdict, score
from appliance.wiring import open_knowledge_base


@dataclass(slots=True)
class BusinessResult:
    business: Business
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter({v.value: 0 for v in Verdict})
        counts.update(a["verdict"] for a in self.answers)
        return counts

    @property
    def replaced(self) -> int:
        """Answers the grounding guard replaced or cut short."""
        return sum(1 for a in self.answers if a["replaced"])

    def summary(self) -> dict[str, Any]:
        counts = self.counts
        facts = sum(1 for q in self.business.questions if not q.decline)
        return {"business": self.business.key, "name": self.business.name,
                "trade": self.business.trade, "split": self.business.split,
                "questions": len(self.answers), "fact_questions": facts, **counts,
                "right_rate": round(counts[Verdict.RIGHT.value] / facts, 3) if facts else None,
                "guard_replacements": self.replaced}


def evaluate(settings: Settings, llm: Llm, business: Business, workers: Workers,
             data_root: Path) -> BusinessResult:
    """One business: ingest its documents into a fresh store, ask every question, score."""
    local = msgspec.structs.replace(settings, data_dir=str(data_root / business.key),
                                    kb_dir=str(business.docs), business_name=business.name)
    kb = open_knowledge_base(local)
    agent = Agent(local, llm, kb, workers)
    documents = Support.of([*business.documents_text(), business.name])
    result = BusinessResult(business)
    for question in business.questions:
        conversation = Conversation(session_id=f"eval-{business.key}")
        asked = [question.text]
        if question.follows:
            asyncio.run(answer(agent, question.follows, conversation))
            asked.append(question.follows)
        started = time.monotonic()
        turn = asyncio.run(answer(agent, question.text, conversation))
        declined = turn["answer"] == agent.unknown_answer
        verdict, invented = score(question, turn["answer"], declined, documents, asked)
        result.answers.append({
            "question": question.text, "kind": question.kind, "follows": question.follows,
            "expect": list(question.expect) or "decline", "answer": turn["answer"],
            "verdict": verdict.value, "invented": invented, "replaced": turn["replaced"],
            "relevance": turn["relevance"], "sources": [s["source"] for s in turn["sources"]],
            "seconds": round(time.monotonic() - started, 3)})
    return result


def evaluate_all(settings: Settings, llm: Llm, businesses: list[Business]) -> list[BusinessResult]:
    workers = Workers.sized(1, 1)
    try:
        with tempfile.TemporaryDirectory(prefix="appliance-eval-") as tmp:
            return [evaluate(settings, llm, b, workers, Path(tmp)) for b in businesses]
    finally:
        workers.shutdown()
