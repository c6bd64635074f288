"""A model server first, the in-process model behind it: a caller hears a slower answer, never
silence.

Each reply goes to the server; if it refuses, gives no first token in time, stalls or breaks
mid-answer, the in-process model answers the same messages. Mid-answer, greedy decoding of the
same weights gives the same text, so the local answer's start is matched against what was already
streamed and only the rest is passed on (a different text is passed on whole, after a space).
The circuit breaker (shared with the ElevenLabs → Piper fail-over) stops paying the timeout on
every turn while the server is down. One log line per change of state, never per turn.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing

from appliance.config import ConfigError, Settings
from appliance.engines.base import ChatMessage, EngineInfo, Llm, PromptUsage, ToolCall, ToolSpec
from appliance.engines.breaker import CircuitBreaker
from appliance.engines.openai_llm import LlmUnavailable, OpenAiLlm

log = logging.getLogger(__name__)

SERVER, LOCAL = "server", "in-process"


class FailoverLlm:
    """Implements ``Llm`` over a remote primary and an in-process fallback, reply by reply."""

    def __init__(self, primary: Llm, fallback: Llm, breaker: CircuitBreaker) -> None:
        self.primary, self.fallback = primary, fallback
        self._breaker = breaker
        self._lock = threading.Lock()  # the breaker is shared by the LLM worker threads
        self._using = SERVER
        self.tool_calling = primary.tool_calling  # what the server was declared to do
        p, f = primary.info, fallback.info
        self.info = EngineInfo(slot="llm", name=f"{p.name}+{f.name}",
                               version=f"{p.version}; {f.version}", path=p.path, device=p.device)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def provider_in_use(self) -> str:
        with self._lock:
            return SERVER if self._breaker.closed else LOCAL

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        session_id: str = "",
        usage: PromptUsage | None = None,
    ) -> Generator[str, None, None]:
        """The server's tokens; on its failure, the in-process model's (from where it broke),
        whose prompt reading then fills ``usage``."""
        def ask(llm: Llm) -> Generator[str, None, None]:
            return llm.stream_chat(messages, max_tokens=max_tokens, temperature=temperature,
                                   session_id=session_id, usage=usage)

        said: list[str] = []
        with self._lock:
            allowed = self._breaker.allow()
        if allowed:
            try:
                with closing(ask(self.primary)) as stream:
                    for token in stream:
                        said.append(token)
                        yield token
            except Exception as err:  # noqa: BLE001 - any server failure means: answer locally
                self._failed(err, mid_answer=bool(said))
            except BaseException:  # closed by a barge-in: no verdict on the server
                with self._lock:
                    self._breaker.abandon()
                raise
            else:
                self._succeeded()
                return
        with closing(ask(self.fallback)) as stream:
            yield from continue_from("".join(said), stream)

    def choose_tool(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *,
                    session_id: str = "") -> ToolCall | None:
        """The server's choice; while it is down, the in-process model's if it declares tool
        calling, else the error (the agent's rules decide that turn)."""
        with self._lock:
            allowed = self._breaker.allow()
        if allowed:
            try:
                chosen = self.primary.choose_tool(messages, tools, session_id=session_id)
            except Exception as err:  # noqa: BLE001 - any server failure
                self._failed(err, mid_answer=False)
                if not self.fallback.tool_calling:
                    raise
            else:
                self._succeeded()
                return chosen
        if not self.fallback.tool_calling:
            raise LlmUnavailable("the model server is down and the in-process model cannot "
                                 "call tools")
        return self.fallback.choose_tool(messages, tools, session_id=session_id)

    def _succeeded(self) -> None:
        with self._lock:
            back = self._breaker.success()
            changed, self._using = self._using != SERVER, SERVER
        if back or changed:
            log.info("model server answers again: answering with %s", self.primary.info.name)

    def _failed(self, err: Exception, *, mid_answer: bool) -> None:
        reason = f"{type(err).__name__}: {err}"
        where = "mid-answer" if mid_answer else "before the first token"
        with self._lock:
            opened = self._breaker.failure()
            changed, self._using = self._using != LOCAL, LOCAL
            retry_in, failures = self._breaker.retry_in, self._breaker.failures
        if opened:
            log.warning("model server unavailable after %d failure(s) in a row (%s, %s): "
                        "answering in-process, trying it again in %.0f s", failures, reason,
                        where, retry_in)
        elif changed:
            log.warning("model server failed (%s, %s): answering in-process", reason, where)
        else:
            log.debug("model server failed again (%s)", reason)


def continue_from(said: str, tokens: Iterator[str]) -> Iterator[str]:
    """``tokens`` minus the ``said`` prefix they start with; all of them if they diverge.

    Held back only while the two agree so far, so a matching answer resumes without repeating a
    word and a different one starts afresh after a space.
    """
    if not said:
        yield from tokens
        return
    buffered = ""
    for token in tokens:
        buffered += token
        if len(buffered) < len(said) and said.startswith(buffered):
            continue
        if buffered.startswith(said):
            if rest := buffered[len(said):]:
                yield rest
        else:
            yield " " + buffered.lstrip()
        break
    yield from tokens


def token_counts(llm: object) -> dict[str, int] | None:
    """The model server's token totals (prompt, cached, generated), for /api/metrics."""
    server = getattr(llm, "primary", None)
    if not isinstance(server, OpenAiLlm):
        return None
    t = server.totals
    return {"prompt": t.prompt, "cached": t.cached, "completion": t.completion}


def with_model_server(settings: Settings, load_local: Callable[[], Llm]) -> Llm:
    """The LLM the settings choose: in-process alone (default), or the server in front of it.

    The in-process model is loaded either way: it is the fall-back that answers at once when the
    server goes away mid-call, rather than after a model load.
    """
    local = load_local()
    if settings.llm_backend == "in-process":
        return local
    if not settings.llm_url.startswith(("http://", "https://")):
        raise ConfigError("APPLIANCE_LLM_URL must be the server's http(s) base URL, e.g. "
                          "http://gpu-host:8000/v1, when APPLIANCE_LLM_BACKEND=openai")
    server = OpenAiLlm(settings.llm_url, settings.llm_server_model, api_key=settings.llm_api_key,
                       connect_timeout_s=settings.llm_connect_timeout_ms / 1000,
                       first_token_s=settings.llm_first_token_ms / 1000,
                       tool_calling=settings.llm_tools == "on")
    log.info("answering with the model server at %s (model %r), in-process %s behind it",
             settings.llm_url, settings.llm_server_model or "default", local.info.name)
    breaker = CircuitBreaker(settings.llm_failures_to_open, settings.llm_cooldown_s)
    return FailoverLlm(server, local, breaker)
