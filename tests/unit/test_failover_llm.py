"""Pure parts of the model-server LLM: resuming an answer, reading token counts."""

from __future__ import annotations

import msgspec

from appliance.engines.base import PromptUsage
from appliance.engines.failover_llm import continue_from
from appliance.engines.openai_llm import _DECODER, Usage, _usage


def test_a_matching_answer_resumes_without_repeating() -> None:
    assert "".join(continue_from("We open", iter(["We", " op", "en at", " 8."]))) == " at 8."


def test_a_different_answer_starts_afresh() -> None:
    assert "".join(continue_from("We open", iter(["Our", " doors", "."]))) == " Our doors."


def test_nothing_said_passes_everything_on() -> None:
    assert list(continue_from("", iter(["a", "b"]))) == ["a", "b"]


def test_a_shorter_matching_answer_adds_nothing() -> None:
    assert list(continue_from("We open at 8.", iter(["We", " open"]))) == []


def test_cached_tokens_from_openai_usage_and_from_llama_server_timings() -> None:
    openai = {"choices": [], "usage": {"prompt_tokens": 90, "completion_tokens": 12,
                                       "prompt_tokens_details": {"cached_tokens": 64}}}
    llama = {"choices": [], "timings": {"cache_n": 80, "prompt_n": 10}}
    assert _usage(_DECODER.decode(msgspec.json.encode(openai))) == Usage(90, 12, 64)
    assert _usage(_DECODER.decode(msgspec.json.encode(llama))) == Usage(0, 0, 80)
    assert _usage(_DECODER.decode(b'{"choices": []}')) is None


def test_the_servers_counts_fill_the_prompt_split() -> None:
    """llama-server's timings: ``prompt_n`` read of ``prompt_tokens``, in ``prompt_ms``."""
    chunk = {"choices": [], "usage": {"prompt_tokens": 90, "completion_tokens": 12},
             "timings": {"cache_n": 80, "prompt_n": 10, "prompt_ms": 25.0}}
    counts = _usage(_DECODER.decode(msgspec.json.encode(chunk)))
    assert counts is not None
    split = PromptUsage()
    counts.fill(split)
    assert split == PromptUsage(tokens=90, reused=80, evaluated=10, eval_s=0.025)
    openai = Usage(prompt=90, completion=12, cached=64)  # no timings: the time is unknown
    openai.fill(split)
    assert split == PromptUsage(tokens=90, reused=64, evaluated=26, eval_s=None)


def test_settings_choose_the_server_and_keep_its_key_secret(tmp_path) -> None:
    import pytest

    from appliance.config import REDACTED, ConfigError
    from appliance.engines.failover_llm import FailoverLlm, with_model_server
    from appliance.engines.fakes import FakeLlm
    from tests.conftest import make_settings

    local = FakeLlm()
    assert with_model_server(make_settings(tmp_path), lambda: local) is local  # default
    settings = make_settings(tmp_path, llm_backend="openai", llm_url="http://gpu:8000/v1",
                             llm_api_key="sk-very-secret")
    llm = with_model_server(settings, lambda: local)
    assert isinstance(llm, FailoverLlm) and llm.fallback is local
    assert settings.redacted()["llm_api_key"] == REDACTED
    assert "sk-very-secret" in settings.secrets()
    with pytest.raises(ConfigError, match="APPLIANCE_LLM_URL"):
        with_model_server(make_settings(tmp_path, llm_backend="openai"), lambda: local)


def test_token_totals_add_up_for_the_metrics_route() -> None:
    from appliance.engines.breaker import CircuitBreaker
    from appliance.engines.failover_llm import FailoverLlm, token_counts
    from appliance.engines.fakes import FakeLlm
    from appliance.engines.openai_llm import OpenAiLlm

    server = OpenAiLlm("http://127.0.0.1:9/v1", "m")
    server._record(Usage(90, 12, 64))
    server._record(Usage(30, 5, 20))
    assert token_counts(FailoverLlm(server, FakeLlm(), CircuitBreaker(2, 1.0))) == {
        "prompt": 120, "cached": 84, "completion": 17}
    assert token_counts(FakeLlm()) is None
    server.close()


def test_the_server_chooses_tools_and_a_failure_leaves_it_to_the_rules() -> None:
    import pytest

    from appliance.engines.base import ChatMessage, ToolSpec
    from appliance.engines.breaker import CircuitBreaker
    from appliance.engines.failover_llm import FailoverLlm
    from appliance.engines.fakes import FakeLlm

    asked, tools = [ChatMessage("user", "bye")], [ToolSpec("end_call", "hang up")]
    server = FakeLlm(calls={"bye": "end_call"})
    llm = FailoverLlm(server, FakeLlm(), CircuitBreaker(1, 60.0))
    assert llm.tool_calling and llm.choose_tool(asked, tools).name == "end_call"  # type: ignore[union-attr]
    server.error = RuntimeError("gone")
    with pytest.raises(RuntimeError):  # the in-process model cannot call tools: rules decide
        llm.choose_tool(asked, tools)
    with pytest.raises(Exception, match="cannot call tools"):  # the breaker is open now
        llm.choose_tool(asked, tools)
    local = FakeLlm(calls={"bye": "end_call"})
    assert FailoverLlm(server, local, CircuitBreaker(1, 60.0)).choose_tool(asked, tools) \
        is not None  # a tool-calling fall-back answers for the server
