"""``appliance bench --cluster 2`` end to end on the smallest scale: a real model server, Chroma
server, PostgreSQL, Redis and two real ``appliance serve`` boxes, then one in-process box.

A benchmark, not a timed test: this checks that both setups answer the same calls, that the
second call was handed to the second box, that the JSON has its shape, and that nothing is left
behind (processes, schema, Redis keys); never how fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import make_settings
from tests.e2e.test_bench import KB, SUMMARY_KEYS, parse

pytestmark = pytest.mark.slow


def bench_schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'")
        return {row[0] for row in rows}


def bench_keys(url: str) -> set[bytes]:
    with redis.Redis.from_url(url) as client:
        return set(client.scan_iter("bench-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    except OSError:
        return "Z"


def test_two_boxes_then_one_answer_the_same_calls(tmp_path: Path, postgres_server: str,
                                                  redis_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, kb_dir=str(KB))
    schemas, keys = bench_schemas(postgres_server), bench_keys(redis_url)
    out = tmp_path / "cluster.json"
    args = parse(["bench", "--cluster", "2", "--calls", "2", "--turns", "1", "--turn-timeout",
                  "60", "--hop-prompts", "2", "--database-url", postgres_server,
                  "--redis-url", redis_url, "--json", str(out)])
    status = args.func(args, settings)

    result = json.loads(out.read_text())
    cluster, one_box = result["setups"]["cluster"], result["setups"]["one_box"]
    assert status == 0, [lv["errors"] for lv in (cluster["levels"][0], one_box["levels"][0])]
    assert result["schema"] == "appliance-bench-cluster/1"
    assert result["options"] == {"calls": [2], "turns": 1, "boxes": 2, "capacity": 1,
                                 "hop_prompts": 2, "answer_style": "generative"}
    for setup in (cluster, one_box):
        level = setup["levels"][0]
        assert (level["calls"], level["completed"], level["turns_answered"]) == (2, 2, 2)
        assert level["v2v_heard_s"]["n"] == 2 and set(level["v2v_heard_s"]) == SUMMARY_KEYS
    # Every call rang box A; A had one slot, so the second call was handed to B.
    assert cluster["levels"][0]["boxes"] == {"box-a": 1, "box-b": 1}
    assert [(b["box"], b["max_calls"]) for b in cluster["boxes"]] == [("box-a", 1), ("box-b", 1)]
    assert "boxes" not in one_box["levels"][0]  # SQLite, one box: nothing to tell apart
    # Two warm-ups and two calls, each answered by the model (generative answers)...
    assert cluster["model_server"]["chat_requests"] >= 4
    llm = {name: next(m for m in setup["server"]["models"] if m["slot"] == "llm")
           for name, setup in result["setups"].items()}
    assert (llm["cluster"]["device"], llm["one_box"]["device"]) == ("server", "cpu")
    # ... then the hop alone.
    assert {k: v["n"] for k, v in result["llm_hop"].items()} == {
        "in-process": 2, "server": 2, "hop": 2}
    assert "LLM hop alone" in capsys.readouterr().out
    assert "postgres" not in result["command"] and "redis" not in result["command"]
    # Nothing left behind.
    pids = [b["pid"] for b in cluster["boxes"]] + [cluster["model_server"]["pid"],
                                                   one_box["server"]["pid"]]
    assert not [pid for pid in pids if alive(pid)]
    assert bench_schemas(postgres_server) <= schemas
    assert bench_keys(redis_url) <= keys


def test_without_a_database_it_declines_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args: argparse.Namespace = parse(["bench", "--cluster", "2", "--calls", "2"])
    status = args.func(args, make_settings(tmp_path, kb_dir=str(KB)))
    assert status == 2
    assert "--database-url" in capsys.readouterr().err
    assert not (tmp_path / "data" / "bench").exists()  # not even the callers' lines were made
