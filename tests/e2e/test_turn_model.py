"""The real Smart Turn model and the end-of-turn replay, on speech made by two voices.

Behaviour only (which way the model leans, who gets cut off): delays are measured by
``python -m appliance.bench.turn_taking``, never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from appliance.bench import turn_taking
from appliance.config import load_settings
from appliance.engines.silero_vad import SileroVad
from appliance.engines.smart_turn import SmartTurn
from appliance.models.locate import default_path

pytestmark = pytest.mark.slow

CLEARLY_COMPLETE = ("What time do you open on Saturday?", "Are you taking new patients?",
                    "Is there parking near the office?")
# The clearest cut sentences per voice (Piper samples its prosody, so borderline ones flip between
# runs). On most of the set's other mid-sentence stops the model says "complete" for these
# synthetic voices: see the README's turn-taking table.
CLEARLY_CUT = {"piper": ("I was wondering if you could",),
               "espeak-ng": ("I think I chipped my",)}


@pytest.fixture(scope="module")
def turn() -> SmartTurn:
    return SmartTurn(default_path("turn"))


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(default_path("vad"))


@pytest.fixture(scope="module")
def voices() -> dict[str, turn_taking.Speak]:
    found = {"piper": turn_taking.piper_voice(load_settings(environ={}))}
    try:
        found["espeak-ng"] = turn_taking.espeak_voice()
    except turn_taking.VoiceError:
        pass  # a Debian package, not a Python one: its test case says so and skips
    return found


def verdict(text: str, speak: turn_taking.Speak, vad: SileroVad, turn: SmartTurn) -> float:
    """The model's verdict on ``text`` (phone path) at the pause the VAD finds after it, on
    what the listener hands it: the utterance from its pre-roll to the pause."""
    spoken = turn_taking.compose([text], speak, "voice")
    config = turn_taking.configs(load_settings(environ={}))["turn-model"]
    return turn_taking.replay(spoken, vad, turn, config).verdicts[0]


@pytest.mark.parametrize("voice", ["piper", "espeak-ng"])
def test_model_tells_finished_questions_from_cut_sentences(
        turn: SmartTurn, vad: SileroVad, voices: dict[str, turn_taking.Speak], voice: str) -> None:
    if voice not in voices:
        pytest.skip("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    speak = voices[voice]
    complete = {text: verdict(text, speak, vad, turn) for text in CLEARLY_COMPLETE}
    cut = {text: verdict(text, speak, vad, turn) for text in CLEARLY_CUT[voice]}
    assert all(p >= 0.5 for p in complete.values()), complete
    assert all(p < 0.5 for p in cut.values()), cut


def test_model_reads_only_the_last_eight_seconds(turn: SmartTurn,
                                                 voices: dict[str, turn_taking.Speak]) -> None:
    audio = turn_taking.compose([CLEARLY_COMPLETE[0]], voices["piper"], "piper").audio
    noise = np.random.default_rng(0).normal(0, 0.3, 16000 * 12).astype(np.float32)
    with_history = np.concatenate([noise, np.zeros(16000 * 8 - audio.size, np.float32), audio])
    assert turn.completion(with_history) == pytest.approx(turn.completion(audio), abs=1e-4)


def test_replay_cuts_a_paused_caller_only_without_the_model(
        turn: SmartTurn, vad: SileroVad, voices: dict[str, turn_taking.Speak]) -> None:
    configs = turn_taking.configs(load_settings(environ={}))
    paused = turn_taking.compose(["I was wondering if you could", "tell me your hours."],
                                 voices["piper"], "piper", pause_s=0.6)
    fixed = turn_taking.replay(paused, vad, None, configs["fixed-400ms"])
    judged = turn_taking.replay(paused, vad, turn, configs["turn-model"])
    assert fixed.cut_off and not fixed.verdicts
    assert not judged.cut_off and judged.verdicts[0] < 0.5
    assert len(judged.ends) == 1 and judged.delay_s is not None
