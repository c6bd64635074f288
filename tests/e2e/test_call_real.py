"""End to end on the real default models: a real server on loopback, called as Twilio would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.caller import CallOptions, CallReport, from_texts, run_call
from appliance.config import Settings
from appliance.models.locate import default_path
from appliance.web.app import create_app
from appliance.wiring import load_engines
from tests.conftest import make_settings, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings = make_settings(tmp_path_factory.mktemp("real"), kb_dir=str(
        Path(__file__).resolve().parents[2] / "kb"))
    with running_server(create_app(settings, load_engines), settings, ready_timeout=300) as base:
        yield base, settings


@pytest.fixture(scope="module")
def voice() -> Path:
    return default_path("tts")


def call(settings: Settings, texts: list[str], voice: Path, **options: object) -> CallReport:
    utterances = from_texts(texts, voice, 1)
    opts = CallOptions.from_settings(settings, utterances=tuple(utterances), **options)
    return asyncio.run(run_call(opts))


def test_caller_hears_greeting_and_a_spoken_answer(server: tuple[str, Settings], voice: Path,
                                                   tmp_path: Path) -> None:
    _, settings = server
    out = tmp_path / "heard.wav"
    report = call(settings, ["What time do you open tomorrow?"], voice, out=str(out),
                  turn_timeout_s=30)
    assert report.ok, report.to_json()
    assert report.greeting_s is not None and report.greeting_s < 5
    turn = report.turns[0]
    assert turn.v2v_s is not None and turn.agent
    words = (turn.transcript or "").lower()
    assert "open" in words and "tomorrow" in words, words
    record = report.server
    assert record is not None and record["call"]["ended"] and record["call"]["status"]
    metrics = [t["metrics"] for t in record["turns"] if t["metrics"]]
    assert metrics and all(metrics[0][k] is not None for k in
                           ("endpoint_s", "stt_s", "llm_ttft_s", "tts_first_audio_s", "v2v_s"))
    assert out.stat().st_size > 8000 * 2 * 3  # seconds of audio the caller heard


def test_barge_in_clears_and_records_what_was_heard(server: tuple[str, Settings],
                                                    voice: Path) -> None:
    _, settings = server
    report = call(settings, ["Tell me about the services you offer.",
                             "Sorry, how much is a cleaning?"], voice,
                  interrupt_after_s=0.8, turn_timeout_s=30)
    assert report.turns[1].clear_received or report.turns[0].clear_received, report.to_json()
    record = report.server
    assert record is not None
    interrupted = [t for t in record["turns"] if t["role"] == "assistant" and t["interrupted"]]
    assert interrupted, record["turns"]
    turn = interrupted[0]
    assert turn["heard_text"] is not None and len(turn["heard_text"]) < len(turn["text"])
    assert "barge-in" in [e["type"] for e in record["events"]]
