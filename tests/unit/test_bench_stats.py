"""The benchmark's arithmetic and bookkeeping, without a server: percentiles, summaries, how call
reports become level figures, the cached utterance files and the printed table."""

from __future__ import annotations

import argparse
import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.bench import report, utterances
from appliance.bench.runner import (
    BenchOptions,
    level_result,
    max_turns,
    reply_metrics,
    server_env,
    server_lag,
    server_settings,
    settings_toml,
    versus,
)
from appliance.bench.stats import LoopLag, percentile, summarize, turn_stages
from appliance.bench.watchers import with_and_without
from appliance.caller.audio_source import Utterance
from appliance.caller.report import CallFailed, CallReport, TurnReport
from appliance.cli import bench_cmd
from appliance.config import load_settings
from appliance.core.audio import pcm16_to_ulaw8k

METRICS = {"endpoint_s": 0.4, "stt_s": 0.3, "llm_ttft_s": 0.1, "first_sentence_s": 0.2,
           "tts_first_audio_s": 0.1, "v2v_s": 1.05, "tts_provider": "piper"}


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [0.9, 0.1, 3.2, 1.5, 1.5, 2.7, 0.4]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([2.0], 95) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_skips_missing_values() -> None:
    summary = summarize([1.0, None, 3.0, float("nan"), 2.0])
    assert (summary.n, summary.p50, summary.max, summary.mean) == (3, 2.0, 3.0, 2.0)
    empty = summarize([None])
    assert empty.n == 0 and empty.p50 is None
    assert empty.to_json()["p95"] is None


def test_turn_stages_accounts_for_the_unattributed_time() -> None:
    stages = turn_stages(METRICS)
    assert stages["server_v2v_s"] == 1.05
    assert stages["other_s"] == pytest.approx(1.05 - (0.4 + 0.3 + 0.2 + 0.1))
    retrieved = turn_stages(dict(METRICS, retrieval_s=0.02))
    assert retrieved["other_s"] == pytest.approx(1.05 - (0.4 + 0.3 + 0.2 + 0.1) - 0.02)
    partial = turn_stages({"endpoint_s": 0.4, "v2v_s": 1.0, "tts_provider": "piper"})
    assert partial["other_s"] is None and partial["stt_s"] is None


def test_loop_lag_samples_and_resets() -> None:
    async def run() -> list[float]:
        lag = LoopLag(interval_s=0.005)
        lag.start()
        await asyncio.sleep(0.05)
        taken = lag.reset()
        await lag.stop()
        return taken

    samples = asyncio.run(run())
    assert samples and all(s >= 0 for s in samples)
    capped = LoopLag(keep=10)
    for i in range(25):
        capped.record(i)
    assert len(capped.samples) <= 10 and capped.samples[-1] == 24


def _record(*replies: dict[str, Any] | None) -> dict[str, Any]:
    turns: list[dict[str, Any]] = [{"role": "assistant", "text": "Hello", "metrics": None}]
    for n, metrics in enumerate(replies):
        turns += [{"role": "user", "text": f"q{n}"},
                  {"role": "assistant", "text": f"a{n}", "metrics": metrics}]
    return {"call": {}, "turns": turns, "events": []}


def _report(v2v: list[float | None], server: dict[str, Any] | None) -> CallReport:
    turns = [TurnReport(f"line {i}", v2v_s=v, v2v_played_s=None if v is None else v + 0.02)
             for i, v in enumerate(v2v)]
    return CallReport("CA1", greeting_s=1.0, turns=turns, server=server)


def test_reply_metrics_pairs_replies_with_caller_turns() -> None:
    second = dict(METRICS, v2v_s=2.0)
    paired = reply_metrics(_report([1.1, 2.1], _record(METRICS, second)))
    assert paired == [METRICS, second]
    assert reply_metrics(_report([1.1], None)) == [None]


def test_level_result_counts_and_summarizes() -> None:
    good = _report([1.1, 1.3], _record(METRICS, dict(METRICS, speculative=1)))
    assert good.server is not None
    good.server["events"] = [{"type": "ungrounded", "detail": {"reason": "price '$54'"}}]
    unanswered = _report([1.2, None], _record(METRICS))
    rejected = CallReport("CA3", rejected="<Say> busy")
    result = level_result(4, [good, unanswered, rejected, CallFailed("socket refused")], 60.0)
    assert (result["completed"], result["failed"], result["rejected"]) == (1, 3, 1)
    assert (result["turns_answered"], result["turns_total"]) == (3, 4)
    assert result["replies_replaced"] == 1
    assert result["answered_early"] == 1  # of the three answers, one was worked out at a pause
    assert result["v2v_heard_s"]["n"] == 3 and result["v2v_heard_s"]["max"] == pytest.approx(1.32)
    assert result["stages"]["stt_s"]["n"] == 3
    assert result["stages"]["transport_s"]["p50"] == pytest.approx(1.22 - 1.05)
    assert len(result["errors"]) == 3 and any("socket refused" in e for e in result["errors"])
    json.dumps(result)  # machine-readable as is


def test_server_lag_reads_the_metrics_endpoint() -> None:
    body = {"loop_lag": {"samples": 40, "p50_ms": 0.5, "p99_ms": 7.25, "max_ms": 9.0}}
    assert server_lag(body) == {"n": 40, "p50": 0.5, "p95": None, "p99": 7.25, "max": 9.0}
    assert server_lag({"loop_lag": {"samples": 0}}) is None
    assert server_lag(None) is None


def test_scripts_are_fixed_and_differ_between_callers() -> None:
    first = utterances.script(0, 3)
    assert first == utterances.script(0, 3) == list(utterances.LINES[:3])
    assert utterances.script(1, 3)[0] != first[0]
    assert len(utterances.script(5, 20)) == 20
    assert utterances.WARMUP_LINE not in utterances.LINES


def test_ulaw_wav_cache_round_trips(tmp_path: Path) -> None:
    audio = bytes(range(256)) * 7 + b"\x01"  # odd length: padded chunk
    path = tmp_path / "line.wav"
    utterances.write_ulaw_wav(path, audio)
    assert utterances.read_ulaw_wav(path) == audio
    (tmp_path / "pcm.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt " + b"\x10\0\0\0" + b"\1\0" * 8)
    with pytest.raises(ValueError):
        utterances.read_ulaw_wav(tmp_path / "pcm.wav")


def test_cache_key_depends_on_text_and_voice(tmp_path: Path) -> None:
    voice = tmp_path / "joe.onnx"
    voice.write_bytes(b"x" * 10)
    key = utterances.cache_key("Hello?", voice)
    assert key == utterances.cache_key("Hello?", voice)
    assert key != utterances.cache_key("Hello!", voice)
    voice.write_bytes(b"x" * 11)
    assert key != utterances.cache_key("Hello?", voice)


def _result() -> dict[str, Any]:
    level = level_result(1, [_report([0.9], _record(METRICS))], 30.0)
    level.update({"loop_lag_ms": {"server": None, "healthz_rtt": {"p99": 3.2},
                                  "bench": {"p99": 1.1}},
                  "server": {"cpu_pct": 80.0, "rss_peak_mb": 900.0, "rss_hwm_mb": 950.0},
                  "bench_cpu_pct": 5.0, "machine_cpu_busy_pct": 60.0,
                  "gpu_memory_peak_mb": None, "loadavg_end": [1.5, 1.0, 0.5]})
    return {"machine": {"cpu": "Test CPU", "cores": 2, "ram_gb": 4.0, "gpu": None, "os": "Linux",
                        "python": "3.11", "loadavg": [0.1, 0.1, 0.1]},
            "server": {"url": "http://127.0.0.1:1", "spawned": True, "pid": 1,
                       "models": [{"slot": "llm", "name": "tiny", "device": "cpu"}]},
            "settings": {"llm_threads": 1}, "options": {"calls": [1], "turns": 1,
                                                        "stagger_s": 0.3, "warmup": False},
            "warmup": None, "levels": [level]}


def test_table_shows_each_level_and_marks_missing_figures() -> None:
    text = report.table(_result())
    assert "Test CPU, 2 cores" in text and "llm=tiny (cpu)" in text
    v2v = next(line for line in text.splitlines() if line.startswith("voice-to-voice, caller"))
    assert "0.92/0.92/0.92" in v2v
    server_loop = next(line for line in text.splitlines() if "server loop" in line)
    assert server_loop.rstrip().endswith("n/a")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    report.plot(_result(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spawned_server_gets_exactly_these_settings(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mine = load_settings(environ={}, persona='Say "hi"\n\tto {business} — ü', llm_threads=3,
                         max_calls=2, twilio_auth_token="user-token", validate_signatures=False)
    child = server_settings(mine, tmp_path / "data", 8123, BenchOptions(calls=(1, 6)))
    assert (child.port, child.max_calls, child.mode) == (8123, 6, "media-streams")
    assert child.validate_signatures and child.twilio_auth_token not in ("", "user-token")
    text = settings_toml(child)
    assert child.twilio_auth_token not in text  # secrets travel by environment only
    monkeypatch.setenv("APPLIANCE_LLM_THREADS", "9")
    env = server_env(child)
    assert "APPLIANCE_LLM_THREADS" not in env
    assert env["TWILIO_AUTH_TOKEN"] == child.twilio_auth_token
    loaded = load_settings(environ={"TWILIO_AUTH_TOKEN": env["TWILIO_AUTH_TOKEN"]},
                           **tomllib.loads(text))
    assert loaded == child


def test_watched_versus_alone_compares_loop_lag_p99_and_v2v_p95() -> None:
    def level(lag: float | None, v2v: float | None) -> dict:
        return {"loop_lag_ms": {"server": None if lag is None else {"p99": lag}},
                "v2v_heard_s": {"p95": v2v}}

    assert with_and_without(level(10.0, 1.0), level(11.0, 1.2)) == {
        "loop_lag_p99_ms": [10.0, 11.0], "loop_lag_ratio": 1.1,
        "v2v_heard_p95_s": [1.0, 1.2], "v2v_ratio": 1.2}
    assert with_and_without(level(None, 1.0), level(5.0, None))["loop_lag_ratio"] is None


def test_versus_gives_each_latency_as_a_multiple_of_the_clean_run() -> None:
    def level(v2v: float, stt: float, rss: float | None) -> dict[str, Any]:
        figures = {"p50": v2v, "p95": 2 * v2v}
        return {"v2v_heard_s": figures, "server": {"rss_end_mb": rss},
                "stages": {"stt_s": {"p50": stt, "p95": 2 * stt}, "endpoint_s": {"p50": None}}}

    vs = versus(level(1.2, 0.5, 1100.0), level(1.0, 0.4, 1000.0))
    assert (vs["v2v_heard_p50"], vs["v2v_heard_p95"]) == (1.2, 1.2)
    assert (vs["stt_p50"], vs["stt_p95"], vs["rss_end"]) == (1.25, 1.25, 1.1)
    assert vs["endpoint_p50"] is None  # a figure missing on either side has no ratio
    assert "STT 1.25/1.25" in report.versus_line(4, vs) and "n/a" in report.versus_line(4, vs)


def test_a_soak_has_lines_enough_and_the_talker_talks_without_a_pause() -> None:
    assert max_turns(600) * 2 >= 600 and max_turns(1) == 1
    silence, voiced = b"\xff" * 160, tone_frame()
    said = Utterance("x", (silence, voiced, silence, voiced, silence), 3)
    assert utterances.speech(said) == voiced + silence + voiced


def tone_frame() -> bytes:
    return pcm16_to_ulaw8k((8000 * np.sin(np.arange(160) / 3)).astype(np.int16), 8000)


def test_a_soak_is_told_by_its_duration_in_the_table_and_the_command() -> None:
    parser = argparse.ArgumentParser(prog="appliance")
    parser.add_argument("--config")
    bench_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["bench", "--calls", "4", "--duration", "600", "--adversary",
                              "--talker"])
    assert bench_cmd.command_line(args) == ("appliance bench --calls 4 --duration 600 "
                                            "--adversary --talker")
    result = _result()
    result["options"]["duration_s"] = 600.0
    assert "turns for 600 s per call" in report.table(result)


PROMPT = {"prompt_tokens": 160, "prompt_reused": 32, "prompt_evaluated": 128,
          "prompt_eval_s": 0.5, "prompt_threads": 1}


def test_prompt_split_is_summarized_for_generated_answers_only() -> None:
    generated = _report([1.1, 1.2], _record(dict(METRICS, **PROMPT),
                                            {**METRICS, **PROMPT, "prompt_reused": 96,
                                             "prompt_evaluated": 64, "prompt_eval_s": 0.25}))
    extractive = level_result(1, [_report([1.0], _record(METRICS))], 30.0)
    assert "prompt" not in extractive
    split = level_result(1, [generated], 30.0)["prompt"]
    assert split["prompt_tokens"]["n"] == 2 and split["prompt_reused"]["max"] == 96
    assert split["prompt_evaluated"]["p50"] == pytest.approx(96)
    assert split["prompt_tokens_per_s"]["max"] == pytest.approx(256)  # 128 / 0.5 and 64 / 0.25
    assert split["prompt_threads"]["p50"] == 1


def test_table_shows_the_prompt_split_when_the_model_answered() -> None:
    assert "reused from the cache" not in report.table(_result())
    result = _result()
    result["levels"] = [dict(result["levels"][0], **level_result(
        1, [_report([0.9], _record(dict(METRICS, **PROMPT)))], 30.0))]
    lines = report.table(result).splitlines()
    row = next(line for line in lines if "reused from the cache" in line)
    assert row.split()[-1] == "32/32/32"
    assert next(line for line in lines if "prompt evaluation" in line).split()[-1] == (
        "0.50/0.50/0.50")
