"""The LLM on a real OpenAI-compatible server (``python -m llama_cpp.server``) and its fail-over
to the in-process model: same answers, barge-in closes the stream, a killed or silent server
costs the caller a slower answer, never silence."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from appliance.engines.base import ChatMessage, ToolSpec
from appliance.engines.breaker import BreakerState, CircuitBreaker
from appliance.engines.failover_llm import LOCAL, SERVER, FailoverLlm
from appliance.engines.llama_cpp_llm import LlamaCppLlm
from appliance.engines.openai_llm import LlmUnavailable, OpenAiLlm
from appliance.models.locate import default_path
from tests.servers import model_server

pytestmark = pytest.mark.slow

SYSTEM = ChatMessage("system", "You work at the front desk of Harbor Dental.")
SHORT = [SYSTEM, ChatMessage("user", "Facts:\n- We open at 8 am.\n\nQuestion: When do you open?")]
LONG = [SYSTEM, ChatMessage("user", "Write a long story about a lighthouse keeper and his dog.")]


@pytest.fixture(scope="module")
def local() -> LlamaCppLlm:
    return LlamaCppLlm(default_path("llm"), instances=1, threads=1, n_ctx=1024, device="cpu")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, object, Path]]:
    with model_server(tmp_path) as running:
        yield running


def answer(llm: object, messages: list[ChatMessage], max_tokens: int = 24) -> str:
    return "".join(llm.stream_chat(messages, max_tokens=max_tokens,  # type: ignore[attr-defined]
                                   temperature=0.0, session_id="s1"))


def failover(url: str, local: LlamaCppLlm, first_token_s: float = 10.0) -> FailoverLlm:
    server = OpenAiLlm(url, "smol", first_token_s=first_token_s)
    return FailoverLlm(server, local, CircuitBreaker(2, 60.0))


def test_the_server_answers_as_the_in_process_model_does(server, local) -> None:
    url, _, log = server
    remote = OpenAiLlm(url, "smol", first_token_s=30.0)
    assert answer(remote, SHORT) == answer(local, SHORT) != ""
    # The same prefix again (next turn of the call): the server reuses its cached prompt.
    follow = [*SHORT, ChatMessage("assistant", "We open at 8 am."),
              ChatMessage("user", "And do you take walk-ins?")]
    answer(remote, follow)
    assert "prefix-match hit" in log.read_text()


def test_barge_in_closes_the_stream_and_the_server_stops(server) -> None:
    url, _, log = server
    remote = OpenAiLlm(url, "smol", first_token_s=30.0)
    with closing(remote.stream_chat(LONG, max_tokens=400, temperature=0.0)) as stream:
        next(stream), next(stream)
    # The server notices the closed connection and stops generating well before 400 tokens.
    assert answer(remote, SHORT)  # served once the cancelled one has stopped
    runs = [int(line.split("/")[1].split()[0]) for line in log.read_text().splitlines()
            if "eval time" in line and "prompt eval" not in line]
    assert runs and runs[0] < 300, runs


def test_a_server_killed_mid_answer_is_finished_by_the_in_process_model(server, local) -> None:
    url, proc, _ = server
    llm = failover(url, local)
    expected = answer(local, LONG, max_tokens=120)
    tokens: list[str] = []
    with closing(llm.stream_chat(LONG, max_tokens=120, temperature=0.0)) as stream:
        for token in stream:
            tokens.append(token)
            if len(tokens) == 3:
                os.kill(proc.pid, signal.SIGKILL)
    assert len(tokens) > 3 and llm.provider_in_use == SERVER  # one failure: not open yet
    assert "".join(tokens) == expected  # resumed where the server broke, no word repeated
    assert answer(llm, SHORT) == answer(local, SHORT)  # down: answered in-process
    assert llm.provider_in_use == LOCAL


def test_a_refused_connection_falls_back_then_the_breaker_opens(local) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # nothing listens there
    breaker = CircuitBreaker(2, 60.0)
    llm = FailoverLlm(OpenAiLlm(url, "smol"), local, breaker)
    expected = answer(local, SHORT)
    assert answer(llm, SHORT) == expected and breaker.state is BreakerState.CLOSED
    assert answer(llm, SHORT) == expected and breaker.state is BreakerState.OPEN


def test_a_silent_server_times_out_and_is_then_skipped(local) -> None:
    """A server that accepts connections but never answers: the first-token timeout."""
    accepted: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        with pytest.raises(LlmUnavailable, match="no token within"):
            answer(OpenAiLlm(url, "smol", first_token_s=0.2), SHORT)
        llm = failover(url, local, first_token_s=0.2)
        expected = answer(local, SHORT)
        for _ in range(3):
            assert answer(llm, SHORT) == expected
        assert len(accepted) == 3  # 1 direct + 2 tries; the open breaker spared the third
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_appliance_ask_answers_through_the_server_and_survives_its_death(server,
                                                                         tmp_path: Path) -> None:
    """The real path: settings → engine selection → agent → model server; same answer with the
    server killed (the in-process model answers)."""
    import json
    import subprocess
    import sys

    url, proc, log = server
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
           "APPLIANCE_KB_DIR": str(root / "kb"), "APPLIANCE_LLM_BACKEND": "openai",
           "APPLIANCE_LLM_URL": url, "APPLIANCE_LLM_SERVER_MODEL": "smol",
           "APPLIANCE_LLM_INSTANCES": "1", "APPLIANCE_LLM_FIRST_TOKEN_MS": "30000",
           "APPLIANCE_ANSWER_STYLE": "generative",  # the model phrases it: the server is asked
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}

    def ask() -> str:
        out = subprocess.run([sys.executable, "-m", "appliance", "ask", "--json",
                              "What are your opening hours on Saturday?"], env=env, check=True,
                             capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout)["answer"]

    served = ask()
    assert served and "POST /v1/chat/completions" in log.read_text()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ask() == served


END_CALL = ToolSpec("end_call", "Say goodbye and hang up.")
TRANSFER = ToolSpec("transfer_to_person", "Put the caller through to a person.")
GOODBYE = [SYSTEM, ChatMessage("user", "That's all, thanks. Goodbye!")]


def test_a_tool_call_comes_back_over_the_wire_as_streamed_deltas(server) -> None:
    """``tools`` in the request, ``tool_calls`` deltas in the stream, through a real server.

    The tiny model's choice is not the point (the GPU phrasing table is): ``tool_choice``
    names the function, so the server constrains the model to it with a grammar and the
    result is the same on every run.
    """
    url, _, log = server
    forced = OpenAiLlm(url, "smol", first_token_s=30.0, tool_calling=True,
                       tool_choice={"type": "function", "function": {"name": "end_call"}})
    call = forced.choose_tool(GOODBYE, [TRANSFER, END_CALL], session_id="s1")
    assert call is not None and call.name == "end_call"
    assert isinstance(json.loads(call.arguments), dict)
    # "auto" on a model whose template has no tool calling: the server answers in words, and
    # that is no call at all.
    free = OpenAiLlm(url, "smol", first_token_s=30.0, tool_calling=True)
    assert free.choose_tool(GOODBYE, [TRANSFER, END_CALL]) is None


def test_the_in_process_model_chooses_through_the_function_calling_handler() -> None:
    """The preset's chat handler runs on a real model and gives an offered function or none."""
    llm = LlamaCppLlm(default_path("llm"), instances=1, threads=1, n_ctx=1024, device="cpu",
                      tool_format="chatml-function-calling")
    assert llm.tool_calling
    call = llm.choose_tool(GOODBYE, [TRANSFER, END_CALL], session_id="s1")
    assert call is None or (call.name in {"end_call", "transfer_to_person"}
                            and isinstance(json.loads(call.arguments), dict))
    assert not LlamaCppLlm(default_path("llm"), instances=1, n_ctx=512).tool_calling
