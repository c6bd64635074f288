"""``appliance bench --cluster``'s box settings: what the boxes must share for a handed-off call
to open on another box and be read back from the first, and what stays each box's own."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.bench.cluster import ClusterOptions, cluster_settings, one_box_settings
from appliance.bench.runner import BenchOptions
from appliance.cli import bench_cmd
from appliance.config import load_settings

SHARED = {"llm_url": "http://127.0.0.1:1/v1", "kb_url": "http://127.0.0.1:2",
          "database_url": "postgresql://x@127.0.0.1/test", "redis_url": "redis://127.0.0.1:3/0",
          "cluster_name": "bench-1234"}


@pytest.mark.parametrize(("calls", "boxes", "capacity", "expected"),
                         [((1, 4), 2, None, 2), ((5,), 2, None, 3), ((2,), 3, None, 1),
                          ((4,), 2, 3, 3)])
def test_each_box_gets_its_share_of_the_largest_level(calls, boxes, capacity, expected) -> None:
    assert ClusterOptions(boxes=boxes, capacity=capacity).per_box(
        BenchOptions(calls=calls)) == expected


def test_boxes_share_servers_and_tokens_but_not_ports_or_data(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path / "own"), max_calls=8,
                             llm_backend="in-process")
    boxes = cluster_settings(settings, BenchOptions(calls=(4,)), ClusterOptions(boxes=2),
                             SHARED, tmp_path)
    a, b = boxes
    assert (a.box_id, b.box_id) == ("box-a", "box-b")
    assert a.port != b.port and a.public_base_url != b.public_base_url
    assert a.data_dir != b.data_dir and settings.data_dir not in (a.data_dir, b.data_dir)
    for box in boxes:
        assert box.max_calls == 2  # not the user's 8: box A must fill for a hand-off
        assert (box.llm_backend, box.llm_server_model, box.answer_style) == (
            "openai", "bench", "generative")
        assert {k: getattr(box, k) for k in SHARED} == SHARED
    # One signing and API token: B accepts the socket A's webhook sent it, A reads B's record.
    assert a.twilio_auth_token == b.twilio_auth_token != settings.twilio_auth_token
    assert a.twilio_account_sid == b.twilio_account_sid
    assert a.api_token == b.api_token and len(a.api_token) >= 16


def test_the_baseline_has_every_model_in_process_and_nothing_shared(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path), llm_backend="openai",
                             llm_url="http://gpu:8000/v1", **{k: v for k, v in SHARED.items()
                                                              if k != "llm_url"})
    one = one_box_settings(settings)
    assert (one.llm_backend, one.stt_backend, one.answer_style) == (
        "in-process", "in-process", "generative")
    assert (one.database_url, one.kb_url, one.redis_url) == ("", "", "")


@pytest.mark.parametrize("extra", [["--adversary"], ["--talker"], ["--console-watchers", "2"],
                                   ["--duration", "60"], ["--barge-in-ms", "300"]])
def test_cluster_refuses_options_it_would_ignore(extra: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="appliance")
    parser.add_argument("--config")
    bench_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["bench", "--cluster", "2", *extra])
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    assert args.func(args, settings) == 2  # refused before anything starts
    assert "--cluster measures plain calls" in capsys.readouterr().err
