"""What the network hop to a model server costs: time to first token, in-process vs a server.

    python -m appliance.bench.llm_hop --url http://127.0.0.1:8081/v1 [--model NAME] [--n 20]

Both sides answer the same short prompts (the receptionist persona, then one question) in turns,
alternating so that machine load drifts affect both alike; the server should run the same GGUF
with the same thread count as ``--threads`` for the difference to be the hop alone (HTTP, JSON,
server-sent events, the server's own framework). Prints p50/p95 of each and of the difference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import closing

from appliance.config import DEFAULT_PERSONA
from appliance.engines.base import ChatMessage, Llm
from appliance.engines.llama_cpp_llm import LlamaCppLlm
from appliance.engines.openai_llm import OpenAiLlm
from appliance.models.locate import default_path

QUESTIONS = [
    "When do you open?", "Where are you?", "Do you take walk-ins?", "How much is a cleaning?",
    "Can I park nearby?", "Are you open Saturday?", "Do you see kids?", "Who is the dentist?",
    "Do you take insurance?", "How do I cancel?", "Is there a fee to cancel?",
    "Do you do whitening?", "What is your phone number?", "Can I pay by card?",
    "Do you do implants?", "How long is a check-up?", "Are you open late?",
    "Do you have emergency slots?", "Is the office accessible?", "Do you offer braces?",
]


def first_token_s(llm: Llm, question: str, session: str) -> float:
    messages = [ChatMessage("system", DEFAULT_PERSONA.format(business="Harbor Dental")),
                ChatMessage("user", question)]
    started = time.perf_counter()
    with closing(llm.stream_chat(messages, max_tokens=8, temperature=0.0,
                                 session_id=session)) as stream:
        next(iter(stream))
    return time.perf_counter() - started


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def warm(url: str, model: str = "") -> None:
    """One short reply from the server, as a long-running one has already given."""
    remote = OpenAiLlm(url, model, first_token_s=60.0)
    try:
        first_token_s(remote, QUESTIONS[0], "warm")
    finally:
        remote.close()


def compare(url: str, model: str = "", n: int = 20, threads: int = 1, batch_threads: int = 0,
            n_ctx: int = 1024) -> dict[str, dict[str, float]]:
    """First-token times of ``n`` prompts each way, alternating, and of their difference (the
    hop): ``{"in-process" | "server" | "hop": {"p50_ms", "p95_ms", "n"}}``. ``threads`` and
    ``batch_threads`` must be the server's for the difference to be the hop alone."""
    local = LlamaCppLlm(default_path("llm"), instances=1, threads=threads,
                        batch_threads=batch_threads, n_ctx=n_ctx)
    remote = OpenAiLlm(url, model, first_token_s=30.0)
    try:
        for llm in (local, remote):  # warm: load pages, open the connection, cache the persona
            first_token_s(llm, QUESTIONS[0], "warm")
        times: dict[str, list[float]] = {"in-process": [], "server": []}
        for i in range(n):
            question = QUESTIONS[i % len(QUESTIONS)]
            times["in-process"].append(first_token_s(local, question, "bench"))
            times["server"].append(first_token_s(remote, question, "bench"))
    finally:
        remote.close()
    times["hop"] = [r - lo for r, lo in zip(times["server"], times["in-process"], strict=True)]
    return {name: {"p50_ms": round(statistics.median(values) * 1000, 1),
                   "p95_ms": round(percentile(values, 95) * 1000, 1), "n": len(values)}
            for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--model", default="", help="model name the server expects")
    parser.add_argument("--n", type=int, default=20, help="prompts per side")
    parser.add_argument("--threads", type=int, default=1, help="in-process LLM threads")
    args = parser.parse_args()
    for name, figures in compare(args.url, args.model, args.n, args.threads).items():
        label = "hop (server - in-process)" if name == "hop" else name
        print(f"{label:28s} p50 {figures['p50_ms']:7.1f} ms   "
              f"p95 {figures['p95_ms']:7.1f} ms   (n={figures['n']})")


if __name__ == "__main__":
    main()
