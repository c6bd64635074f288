"""Chat LLM on an OpenAI-compatible model server (llama-server, vLLM, SGLang, TGI).

Tokens arrive as server-sent events over one kept-alive httpx connection pool. The iterator is
blocking, like the in-process engine's, so the agent drives it from a worker thread; closing it
(barge-in) closes the HTTP response, and the server stops generating for a dropped connection.
Every way the server can let a caller down (refused connection, HTTP error, no first token in
time, a stall or a broken stream mid-answer) is one exception, ``LlmUnavailable``, which the
fail-over wrapper turns into an answer from the in-process model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from appliance.engines.base import ChatMessage, EngineInfo, PromptUsage, ToolCall, ToolSpec

log = logging.getLogger(__name__)

# Same mild penalty as the in-process engine (see llama_cpp_llm.REPEAT_PENALTY), so both give the
# same greedy answer. llama.cpp's servers read ``repeat_penalty``; servers that do not know the
# field ignore it.
REPEAT_PENALTY = 1.1
TOOL_MAX_TOKENS = 48  # a function call with no arguments is ~15 tokens; an answer is cut short


class LlmUnavailable(Exception):
    """The model server did not (or stopped to) answer in time; the message says how."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one reply, as the server reported them (``cached`` 0 when it does not)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    prompt_ms: float | None = None  # llama-server's prompt evaluation time, if it says

    def fill(self, usage: PromptUsage) -> None:
        usage.tokens, usage.reused = self.prompt, self.cached
        usage.evaluated = self.prompt - self.cached
        usage.eval_s = None if self.prompt_ms is None else self.prompt_ms / 1000


class _Chunk(msgspec.Struct):
    choices: list[dict[str, object]] = []
    usage: dict[str, object] | None = None
    timings: dict[str, object] | None = None  # llama-server's own counters


def _usage(chunk: _Chunk) -> Usage | None:
    """OpenAI's ``usage.prompt_tokens_details.cached_tokens``, or llama-server's ``cache_n``."""
    usage, timings = chunk.usage or {}, chunk.timings or {}
    if not usage and not timings:
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = timings.get("cache_n")
    prompt_ms = timings.get("prompt_ms")
    return Usage(prompt=_count(usage.get("prompt_tokens")),
                 completion=_count(usage.get("completion_tokens")), cached=_count(cached),
                 prompt_ms=float(prompt_ms) if isinstance(prompt_ms, int | float) else None)


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


class OpenAiLlm:
    """Implements ``Llm`` over ``POST {base_url}/chat/completions`` with ``stream: true``."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "",
                 connect_timeout_s: float = 0.3, first_token_s: float = 1.5,
                 max_connections: int = 16, tool_calling: bool = False,
                 tool_choice: str | dict[str, Any] = "auto") -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._first_token_s = first_token_s
        # Declared by APPLIANCE_LLM_TOOLS=on: only the operator knows the served model's format.
        # ``tool_choice`` "auto" lets the model answer instead; naming a function forces it.
        self.tool_calling = tool_calling
        self._tool_choice = tool_choice
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # ``read`` bounds every wait on the socket: the first token and any pause between two.
        timeout = httpx.Timeout(connect=connect_timeout_s, read=first_token_s, write=5.0,
                                pool=first_token_s)
        self._client = httpx.Client(headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_connections=max_connections))
        self._lock = threading.Lock()
        self.totals = Usage()  # over every reply the server reported counts for
        self.info = EngineInfo(slot="llm", name=f"{model or 'default'}@{base_url}",
                               version="openai-chat", path=base_url, device="server")

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
        usage: PromptUsage | None = None,
    ) -> Generator[str, None, None]:
        """Blocking generator of content deltas; ``close()`` it to cancel the request.
        ``usage`` is filled from the server's counts, which come with the last chunk."""
        body = self._body(messages, max_tokens, temperature)
        with closing(self._deltas(body, usage)) as deltas:  # barge-in: the response closes now
            for delta in deltas:
                if text := delta.get("content"):
                    yield str(text)

    def choose_tool(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *,
                    session_id: str = "") -> ToolCall | None:
        """The model's function call for this turn, from the streamed ``tool_calls`` deltas
        (the name comes whole, the arguments in pieces); None if it answers.

        OpenAI sends the name in a call's first delta only; llama-cpp-python's server repeats
        it in every delta (found by tests/e2e/test_model_server.py: "end_callend_call..."), so
        a name is taken once per call, never joined.

        Streamed like an answer, so a silent server is caught by the same first-token timer.
        """
        body = {**self._body(messages, TOOL_MAX_TOKENS, 0.0),
                "tools": [tool.schema() for tool in tools], "tool_choice": self._tool_choice}
        calls: dict[int, list[str]] = {}  # index → [name, arguments so far]
        for delta in self._deltas(body):
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                function = call.get("function") or {}
                entry = calls.setdefault(_count(call.get("index")), ["", ""])
                entry[0] = entry[0] or str(function.get("name") or "")
                entry[1] += str(function.get("arguments") or "")
        if not calls:
            return None
        name, arguments = calls[min(calls)]  # one tool at a time: the first call
        return ToolCall(name, arguments or "{}") if name else None

    def _body(self, messages: Sequence[ChatMessage], max_tokens: int,
              temperature: float) -> dict[str, Any]:
        """The same messages in the same order as in-process (persona, history, new turn) keep
        the server's prompt-prefix cache warm; ``cache_prompt`` asks llama-server for it."""
        return {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "repeat_penalty": REPEAT_PENALTY,
            "cache_prompt": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def _deltas(self, body: dict[str, Any],
                usage: PromptUsage | None = None) -> Generator[dict[str, Any], None, None]:
        """The streamed choices' deltas; every failure is ``LlmUnavailable``."""
        started = time.monotonic()
        first = True
        try:
            with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise LlmUnavailable(f"HTTP {response.status_code}: {response.text[:200]!r}")
                for chunk in _events(response.iter_lines()):
                    if (counts := _usage(chunk)) is not None:
                        self._record(counts)
                        if usage is not None:
                            counts.fill(usage)
                    for choice in chunk.choices:
                        delta = choice.get("delta")
                        if isinstance(delta, dict):
                            if delta.get("content") or delta.get("tool_calls"):
                                first = False
                            yield delta
                    if first and time.monotonic() - started > self._first_token_s:
                        raise LlmUnavailable(
                            f"no token within {self._first_token_s * 1000:.0f} ms")
        except httpx.TimeoutException as err:
            what = "no token within" if first else "stream stalled for"
            raise LlmUnavailable(f"{what} {self._first_token_s * 1000:.0f} ms "
                                 f"({type(err).__name__})") from err
        except (httpx.HTTPError, msgspec.DecodeError) as err:
            raise LlmUnavailable(f"{type(err).__name__}: {err}") from err

    def _record(self, usage: Usage) -> None:
        with self._lock:
            t = self.totals
            self.totals = Usage(t.prompt + usage.prompt, t.completion + usage.completion,
                                t.cached + usage.cached)
        log.debug("llm usage: %d prompt tokens (%d cached), %d generated",
                  usage.prompt, usage.cached, usage.completion)

    def close(self) -> None:
        self._client.close()


_DECODER = msgspec.json.Decoder(_Chunk)


def _events(lines: Iterator[str]) -> Iterator[_Chunk]:
    """The JSON payloads of an SSE stream's ``data:`` lines, up to ``[DONE]``; a stream cut
    before it is a failure, not a short answer."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield _DECODER.decode(data)
    raise LlmUnavailable("the stream ended without [DONE]")
