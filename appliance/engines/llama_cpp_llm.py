"""Local chat LLM via llama-cpp-python: a small pool of model instances shared by all calls.

A llama.cpp context is not re-entrant, so each instance serves one stream at a time; several
instances let concurrent calls generate side by side instead of queueing behind one another.
A conversation is routed back to the instance that served it last, whose KV cache still holds
the prompt prefix (system prompt + history), so a later turn only reads its new tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import llama_cpp
from llama_cpp import llama_chat_format

from appliance.engines.base import ChatMessage, EngineInfo, PromptUsage, ToolCall, ToolSpec

logger = logging.getLogger(__name__)

# Small models loop ("I'm at 12 Harbor Street" six times); a mild penalty stops that. Not more:
# llama.cpp also penalises the prompt's tokens, so a strong penalty (1.3) makes the model
# change the very prices and times it should copy from the facts ("$1,205" for "$1,200").
REPEAT_PENALTY = 1.1
TOOL_MAX_TOKENS = 48  # a function call with no arguments is ~15 tokens


def resolve_gpu(device: str) -> bool:
    """Whether to offload layers: ``cuda`` always, ``auto`` only if llama.cpp was built for GPU."""
    if device == "cuda":
        return True
    return device == "auto" and bool(llama_cpp.llama_supports_gpu_offload())


class MeasuredLlama(llama_cpp.Llama):
    """A ``Llama`` that reports how it read a prompt, at the moment it finished reading it.

    ``sample`` is first called right after the prompt's last decode, before anything generated
    is fed back: then every decode since the counters' reset read the prompt (llama.cpp counts a
    one-token decode, such as a fully cached prompt's replayed last token, as generation, hence
    the sums), and ``n_tokens`` is the prompt's length. Reading the counters later, at the first
    streamed chunk, would count the tokens generated while llama-cpp-python held text back.
    """

    measuring: PromptUsage | None = None  # set per reply, cleared at its first token

    def sample(self, *args: Any, **kwargs: Any) -> int:
        if (usage := self.measuring) is not None:
            self.measuring = None
            llama_cpp.llama_synchronize(self.ctx)  # the counters move when a decode is awaited
            perf = llama_cpp.llama_perf_context(self.ctx)
            # llama.cpp reports each count as at least 1: a count is real only with its time
            evaluated = ((perf.n_p_eval if perf.t_p_eval_ms > 0 else 0)
                         + (perf.n_eval if perf.t_eval_ms > 0 else 0))
            usage.tokens, usage.evaluated = self.n_tokens, evaluated
            usage.reused = self.n_tokens - evaluated
            usage.eval_s = (perf.t_p_eval_ms + perf.t_eval_ms) / 1000
        return cast(int, super().sample(*args, **kwargs))


class PooledModel:
    """One loaded model plus the conversation whose prefix its cache holds."""

    def __init__(self, llama: MeasuredLlama) -> None:
        self.llama = llama
        self.session_id = ""
        self.last_used = 0.0


class InstancePool:
    """Hands out instances one holder at a time, preferring the one that knows the session."""

    def __init__(self, instances: Sequence[PooledModel]) -> None:
        self._free = list(instances)
        self._size = len(self._free)
        self._cond = threading.Condition()

    def acquire(self, session_id: str) -> PooledModel:
        """Block until an instance is free; prefer the session's own, else the least recent."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._free))
            own = [i for i in self._free if session_id and i.session_id == session_id]
            chosen = own[0] if own else min(self._free, key=lambda i: i.last_used)
            self._free.remove(chosen)
            return chosen

    def release(self, instance: PooledModel, session_id: str) -> None:
        with self._cond:
            instance.session_id = session_id
            instance.last_used = time.monotonic()
            self._free.append(instance)
            self._cond.notify()

    @property
    def free(self) -> int:
        with self._cond:
            return len(self._free)

    @property
    def busy(self) -> int:
        with self._cond:
            return self._size - len(self._free)


class LlamaCppLlm:
    """``instances`` copies of one GGUF model; chat uses the GGUF's embedded chat template."""

    def __init__(
        self,
        model_path: str | Path,
        instances: int = 1,
        threads: int = 1,
        batch_threads: int = 0,
        n_ctx: int = 2048,
        gpu_layers: int = -1,
        device: str = "cpu",
        tool_format: str = "",
    ) -> None:
        gpu = resolve_gpu(device)
        # The llama.cpp chat handler that lets the model call functions ("chatml-function-
        # calling" for Qwen2.5), from the model preset; empty: this model cannot, the rules
        # decide. Answers keep the GGUF's own template either way.
        self.tool_calling = bool(tool_format)
        self._tool_handler = (llama_chat_format.get_chat_completion_handler(tool_format)
                              if tool_format else None)
        started = time.perf_counter()
        llamas = [
            MeasuredLlama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_threads=threads,
                # Reading the prompt is a short burst that scales with cores; generating is long
                # and must leave room for the other engines: separate thread counts.
                n_threads_batch=batch_threads or threads,
                n_gpu_layers=gpu_layers if gpu else 0,
                verbose=False,
            )
            for _ in range(instances)
        ]
        self.pool = InstancePool([PooledModel(llama) for llama in llamas])
        self.threads, self.batch_threads = threads, batch_threads or threads
        self.info = EngineInfo(
            slot="llm",
            name=Path(model_path).name,
            version=f"llama-cpp-python {llama_cpp.__version__}",
            path=str(model_path),
            device="cuda" if gpu else "cpu",
        )
        logger.info(
            "loaded %s x%d (threads=%d, ctx=%d, %s) in %.2fs",
            self.info.name, instances, threads, n_ctx, self.info.device,
            time.perf_counter() - started,
        )

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
        usage: PromptUsage | None = None,
    ) -> Generator[str, None, None]:
        """Blocking generator of content deltas; the instance is held only while it runs.

        Iterate it to the end or ``close()`` it: an abandoned generator keeps its instance busy
        until it is garbage-collected.
        """
        instance = self.pool.acquire(session_id)
        try:
            # More threads read the prompt only while no other stream runs: on a small box,
            # oversubscribed cores make llama.cpp collapse (measured: ~40 vs ~150 tokens/s).
            batch = self.batch_threads if self.pool.busy == 1 else self.threads
            llama_cpp.llama_set_n_threads(instance.llama.ctx, self.threads, batch)
            if usage is not None:
                usage.threads = batch
                llama_cpp.llama_perf_context_reset(instance.llama.ctx)
                instance.llama.measuring = usage
            # llama-cpp-python types each message role as its own TypedDict, and the result as
            # one of two shapes whatever ``stream`` says: the stream is a generator of chunks.
            stream = cast(Generator[dict[str, Any], None, None],
                          instance.llama.create_chat_completion(
                              messages=cast(Any, [{"role": m.role, "content": m.content}
                                                  for m in messages]),
                              max_tokens=max_tokens,
                              temperature=temperature,
                              repeat_penalty=REPEAT_PENALTY,
                              stream=True,
                          ))
            with closing(stream):
                for chunk in stream:
                    delta = chunk["choices"][0]["delta"].get("content")
                    if delta:
                        yield delta
        finally:
            instance.llama.measuring = None  # closed before its first token
            self.pool.release(instance, session_id)

    def choose_tool(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *,
                    session_id: str = "") -> ToolCall | None:
        """The preset's function-calling handler decides: a call, or None when it answers."""
        if self._tool_handler is None:
            raise RuntimeError(f"{self.info.name} declares no tool calling")
        instance = self.pool.acquire(session_id)
        try:
            result = cast(dict[str, Any], self._tool_handler(
                llama=instance.llama,
                messages=cast(Any, [{"role": m.role, "content": m.content} for m in messages]),
                tools=cast(Any, [tool.schema() for tool in tools]), tool_choice="auto",
                max_tokens=TOOL_MAX_TOKENS, temperature=0.0, stream=False))
        finally:
            self.pool.release(instance, session_id)
        calls = result["choices"][0]["message"].get("tool_calls") or []
        if not calls:
            return None
        function = calls[0]["function"]
        return ToolCall(str(function["name"]), str(function.get("arguments") or "{}"))
