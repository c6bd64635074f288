"""``appliance ask``: one agent turn as text, through the same retrieval and LLM code as calls."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from appliance.config import Settings
from appliance.core.agent import Agent, Conversation
from appliance.core.workers import Workers
from appliance.wiring import load_llm, open_knowledge_base


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ask", help="ask the agent one question as text (answer + sources)")
    parser.add_argument("text", nargs="+", help="the caller's question")
    parser.add_argument("--json", action="store_true",
                        help='print {"answer", "sources", "timings"} as JSON')
    parser.set_defaults(func=ask)


async def answer(agent: Agent, text: str,
                 conversation: Conversation | None = None) -> dict[str, Any]:
    """One turn, timed the way a call times it; ``conversation`` carries earlier turns."""
    started = time.monotonic()
    conversation = conversation or Conversation(session_id="ask")
    reply = await agent.reply(conversation, text)
    first: float | None = None
    parts: list[str] = []
    async for token in reply.tokens:
        first = first or time.monotonic() - started
        parts.append(token)
    spoken = "".join(parts).strip()
    conversation.add("user", text)
    conversation.add("assistant", spoken)
    return {
        "answer": spoken,
        "tool": reply.tool.value if reply.tool else None,
        "grounded": reply.grounded,
        "replaced": reply.guard.replaced,
        "sources": [{"id": c.id, "source": c.source, "heading": c.heading,
                     "distance": round(c.distance, 3),
                     "bm25": round(float(c.metadata.get("bm25", 0.0)), 3)}  # type: ignore[arg-type]
                    for c in reply.sources],
        "relevance": {k: round(float(v), 3) for k, v in  # type: ignore[arg-type]
                      (reply.sources[0].metadata if reply.sources else {}).items()
                      if k in ("best_distance", "best_bm25", "coverage")},
        "timings": {"retrieval_s": round(reply.retrieval_s or 0.0, 3),
                    "first_token_s": round(first or 0.0, 3),
                    "total_s": round(time.monotonic() - started, 3)},
    }


def ask(args: argparse.Namespace, settings: Settings) -> int:
    workers = Workers.sized(1, 1)
    agent = Agent(settings, load_llm(settings, instances=1), open_knowledge_base(settings), workers)
    try:
        result = asyncio.run(answer(agent, " ".join(args.text)))
    finally:
        workers.shutdown()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(result["answer"])
    for source in result["sources"]:
        print(f"  source: {source['source']} › {source['heading']} ({source['distance']})")
    timings = result["timings"]
    print(f"  retrieval {timings['retrieval_s']} s · first token {timings['first_token_s']} s · "
          f"total {timings['total_s']} s")
    return 0
