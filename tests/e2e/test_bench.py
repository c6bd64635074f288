"""``appliance bench`` end to end: one real call of one turn against a spawned real server.

A benchmark, not a timed test: this checks it runs and writes well-formed JSON, never how fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from appliance.cli import bench_cmd
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

KB = Path(__file__).resolve().parents[2] / "kb"
STAGE_KEYS = {"endpoint_s", "stt_s", "retrieval_s", "llm_ttft_s", "first_sentence_s",
              "tts_first_audio_s", "server_v2v_s", "other_s", "transport_s"}
SUMMARY_KEYS = {"n", "p50", "p95", "p99", "max", "mean"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="appliance")
    parser.add_argument("--config")
    bench_cmd.register(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(argv)


def test_one_call_one_turn_writes_the_json(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, kb_dir=str(KB))
    out = tmp_path / "bench.json"
    args = parse(["bench", "--calls", "1", "--turns", "1", "--no-warmup", "--turn-timeout", "60",
                  "--json", str(out)])
    status = args.func(args, settings)

    result = json.loads(out.read_text())
    level = result["levels"][0]
    assert status == 0, level["errors"]
    assert result["schema"] == "appliance-bench/1"
    assert {"cpu", "cores", "ram_gb", "gpu"} <= result["machine"].keys()
    assert result["server"]["spawned"] and result["server"]["models"]
    assert result["settings"]["llm_threads"] == settings.llm_threads
    assert result["options"] == {"calls": [1], "turns": 1, "stagger_s": 0.3, "warmup": False,
                                 "url": None, "hold": False, "barge_in_s": None,
                                 "adversary": False, "console_watchers": 0, "talker": False,
                                 "duration_s": None}
    assert (level["calls"], level["completed"], level["failed"]) == (1, 1, 0)
    assert (level["turns_answered"], level["turns_total"]) == (1, 1)
    assert set(level["v2v_heard_s"]) == SUMMARY_KEYS and level["v2v_heard_s"]["n"] == 1
    assert set(level["stages"]) == STAGE_KEYS
    assert all(level["stages"][k]["n"] == 1 for k in ("endpoint_s", "stt_s", "llm_ttft_s"))
    assert {"server", "healthz_rtt", "bench"} == level["loop_lag_ms"].keys()
    assert level["server"]["rss_peak_mb"] is None or level["server"]["rss_peak_mb"] > 0
    assert level["server"]["rss_end_mb"] is None or level["server"]["rss_end_mb"] > 0
    assert "adversary" not in level
    assert "voice-to-voice, caller heard" in capsys.readouterr().out
    cached = list((tmp_path / "data" / "bench" / "utterances").glob("*.wav"))
    assert cached  # the caller's lines are kept for the next run


def test_barge_in_reaction_is_measured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kb_dir=str(KB))
    out = tmp_path / "bench.json"
    args = parse(["bench", "--calls", "1", "--turns", "2", "--no-warmup", "--turn-timeout", "60",
                  "--barge-in-ms", "300", "--json", str(out)])
    status = args.func(args, settings)

    result = json.loads(out.read_text())
    level = result["levels"][0]
    assert status == 0, level["errors"]
    assert result["options"]["barge_in_s"] == 0.3
    first, second = level["call_reports"][0]["turns"]
    assert first["barge_in_s"] is not None and second["barge_in_s"] is None
    assert level["barge_in_s"]["n"] == 1
    assert second["clear_received"] and first["interrupted"]  # the server stopped the reply


def test_console_watchers_run_each_level_twice_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, kb_dir=str(KB))
    out = tmp_path / "bench.json"
    args = parse(["bench", "--calls", "1", "--turns", "1", "--no-warmup", "--turn-timeout", "60",
                  "--console-watchers", "2", "--json", str(out)])
    status = args.func(args, settings)

    result = json.loads(out.read_text())
    alone, watched = result["levels"]
    assert status == 0, alone["errors"] + watched["errors"]
    assert "console_watchers" not in alone
    viewers = watched["console_watchers"]
    assert viewers["watchers"] == 2 and viewers["errors"] == {}
    assert viewers["events"]["snapshot"] >= 2 and viewers["events"]["line"] >= 2
    assert viewers["page_loads"] > 0
    versus = viewers["versus_without"]
    assert versus["v2v_heard_p95_s"] == [alone["v2v_heard_s"]["p95"],
                                         watched["v2v_heard_s"]["p95"]]
    assert "console viewer(s) beside 1 call(s)" in capsys.readouterr().out
    assert result["command"].endswith("--console-watchers 2")
