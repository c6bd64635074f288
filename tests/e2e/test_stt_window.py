"""The Whisper-window measurement (python -m appliance.bench.stt_window) through the real voice
and the real model, on two questions instead of the evaluation set."""

from __future__ import annotations

import pytest

from appliance.bench import stt_window
from appliance.config import Settings

pytestmark = pytest.mark.slow


def test_the_window_measurement_reports_words_and_time_per_padding(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    questions = [("what time do you open on monday", "tuning"),
                 ("do you have parking", "report")]
    monkeypatch.setattr(stt_window, "sentences", lambda split: questions)
    report = stt_window.run(settings, [6.0], None, ["piper"])
    rows = {(r["pad_s"], r["split"]): r for r in report["results"]}
    assert set(rows) == {(None, "tuning"), (None, "report"), (None, "all"),
                         (6.0, "tuning"), (6.0, "report"), (6.0, "all")}
    assert rows[(None, "all")]["differ_from_full"] == 0 and rows[(None, "all")]["n"] == 2
    assert rows[(6.0, "all")]["wer"] < 0.5  # Piper's clear voice, heard by the short window
    assert [u["text"] for u in report["utterances"]] == [q for q, _ in questions]
    assert "monday" in report["utterances"][0]["pad_6"].lower()
    assert "audio + 6 s" in stt_window.table(report)
