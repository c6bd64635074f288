"""``CallSession`` driven directly: fake transport, in-memory call log, a clock moved by hand.

These hold what the socket-level tests cannot pin down on a busy machine: the order of the
stages, the metrics' arithmetic, when the hold phrase fires, and how much of a sentence the
caller heard when they barged in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.core.events import StageEventType as E
from appliance.core.playout import HOLD_MARK_PREFIX
from appliance.core.session import State
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts
from tests.conftest import make_settings
from tests.session.harness import QUESTION, SILENCE, GatedLlm, GatedStt, start_call, tone

pytestmark = pytest.mark.anyio

ANSWER = "We open at nine. See you then."


async def test_a_turn_runs_its_stages_in_order_and_times_them(settings: Settings) -> None:
    call = await start_call(settings)
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
        call.ack()
        await call.until(lambda: len(call.store.turns) == 3, "the answer recorded")
        assert call.session.state is State.LISTENING  # the last mark came back
    finally:
        await call.end()
    pipeline = [E.TURN_START, E.STT_END, E.RETRIEVAL_END, E.LLM_START, E.LLM_FIRST_TOKEN,
                E.SENTENCE_READY, E.TTS_FIRST_AUDIO, E.TURN_END]
    order = [t for t in call.types() if t in pipeline]
    assert sorted(set(order), key=order.index) == pipeline
    greeting, user, answer = call.store.turns
    assert (greeting["text"], user["text"], answer["text"]) == (
        settings.greeting_text, QUESTION, ANSWER)
    assert user["idx"] == answer["idx"] == 1 and not answer["interrupted"]
    metrics = answer["metrics"]
    # The clock stood still while the session worked: every stage took no time, and the
    # caller waited only for the silence that ended their turn (whole 32 ms VAD windows).
    assert 0.4 <= metrics.endpoint_s < 0.45 and metrics.v2v_s == metrics.endpoint_s
    assert metrics.stt_s == metrics.llm_ttft_s == metrics.tts_first_audio_s == 0.0
    assert metrics.retrieval_s is not None and metrics.tts_provider == "fake-tts"
    assert [s.provider for s in metrics.tts_sentences] == ["fake-tts", "fake-tts"]


async def test_an_answer_that_comes_whole_is_spoken_from_its_first_clause(
        settings: Settings) -> None:
    """An answer handed over in one piece (a fact line) goes to the voice clause first, as a
    streamed one does: the caller hears its first six words without waiting for the rest."""
    whole = "Harbor Dental is in-network with Delta Dental PPO, Cigna Dental PPO and MetLife."
    call = await start_call(settings, llm=FakeLlm([whole]))
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    pieces = [e.data["text"] for e in call.events if e.type is E.SENTENCE_READY]
    assert pieces == ["Harbor Dental is in-network with Delta Dental PPO,",
                      "Cigna Dental PPO and MetLife."]
    assert len(call.transport.answer_marks()) == 3  # the greeting, then one mark a piece


async def test_the_models_prompt_reading_reaches_the_turn_metrics(settings: Settings) -> None:
    """The second turn's prompt starts with the first's (persona, then the question): the fake
    model reuses that prefix, and both turns' split is recorded."""
    stt = FakeStt([QUESTION, QUESTION])
    call = await start_call(settings, stt=stt)
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.TURN_END in call.types(), "the first answer")
        call.ack()
        await call.until(lambda: len(call.store.turns) == 3, "the first answer recorded")
        await call.ask()
        await call.until(lambda: call.types().count(E.TURN_END) == 2, "the second answer")
        call.ack()
        await call.until(lambda: len(call.store.turns) == 5, "the second answer recorded")
    finally:
        await call.end()
    first, second = (t["metrics"] for t in call.store.turns if t["role"] == "assistant"
                     and t["metrics"] is not None)
    assert first.prompt_reused == 0 and first.prompt_evaluated == first.prompt_tokens > 0
    assert 0 < second.prompt_reused < second.prompt_tokens
    assert second.prompt_evaluated == second.prompt_tokens - second.prompt_reused
    assert first.prompt_threads == second.prompt_threads == 1


async def test_transcription_starts_at_the_pause_and_is_reused(settings: Settings) -> None:
    stt = GatedStt()
    call = await start_call(settings, stt=stt)
    try:
        await call.greeted()
        call.say(tone(0.8) + SILENCE * 15)  # 300 ms of silence: a pause, not yet the end
        await call.until(lambda: E.STT_START in call.types(), "early transcription")
        assert call.first(E.STT_START).data == {"early": True}
        assert E.TURN_START not in call.types()
        call.clock.advance(0.2)
        call.say(SILENCE * 15)  # the end of the turn, while the words are still coming
        await call.until(lambda: E.TURN_START in call.types(), "end of turn")
        call.clock.advance(0.1)
        stt.gate.set()
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    assert call.types().count(E.STT_START) == 1 and len(stt.calls) == 1
    assert call.types().index(E.STT_START) < call.types().index(E.TURN_START)
    answer = call.store.turns[-1]
    # Transcription ran 0.3 s on the clock; the caller waited only for the last 0.1 s of it.
    assert answer["metrics"].stt_s == pytest.approx(0.1)


async def test_a_slow_answer_gets_the_hold_phrase_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hold_after_ms=1000)
    llm = GatedLlm(["We open at nine."])
    call = await start_call(settings, llm=llm)
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.LLM_START in call.types(), "the model asked")
        marks = len(call.transport.marks())
        call.clock.advance(0.5)  # 0.4 s of the endpoint silence + 0.5 s: not yet 1 s
        await call.until(lambda: call.clock.sleeping, "the hold timer")
        assert len(call.transport.marks()) == marks  # nothing said yet
        call.clock.advance(0.2)
        await call.until(lambda: len(call.transport.marks()) > marks, "the hold phrase")
        llm.gate.set()
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    hold, answer = call.transport.marks()[-2:]
    assert hold.startswith(HOLD_MARK_PREFIX) and answer.startswith("t1-")
    assert call.store.turns[-1]["text"] == "We open at nine."  # not part of the answer


async def test_a_quick_answer_gets_no_hold_phrase(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hold_after_ms=1000)
    call = await start_call(settings)
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
        call.clock.advance(5.0)
        await call.until(lambda: not call.clock.sleeping, "the hold timer gone")
    finally:
        await call.end()
    assert not any(m.startswith(HOLD_MARK_PREFIX) for m in call.transport.marks())


async def test_barge_in_keeps_the_share_of_the_sentence_that_played(settings: Settings) -> None:
    call = await start_call(settings, tts=FakeTts(ms=2000, chunk_ms=100))
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: len(call.transport.answer_marks()) == 3, "both sentences")
        first_sentence = call.transport.answer_marks()[1]
        call.ack(first_sentence)  # "We open at nine." heard; "See you then." starts now
        call.clock.advance(1.0)  # half of its 2 s
        call.say(tone(0.4))
        await call.until(lambda: ("clear", None) in call.transport.sent, "the clear")
        await call.until(lambda: len(call.store.turns) == 3, "the answer recorded")
    finally:
        await call.end()
    answer = call.store.turns[-1]
    assert answer["interrupted"] and answer["text"] == ANSWER
    assert answer["heard_text"] == "We open at nine. See"  # one of three words: half of it
    assert {"type": "barge-in", "heard": "We open at nine. See"} in call.store.events
    assert call.session.recorder.conversation.history[-1].content == "We open at nine. See"


async def test_a_failed_transcription_is_coded_and_apologised_for(settings: Settings) -> None:
    stt = FakeStt([QUESTION])
    stt.error = RuntimeError("decoder exploded")
    call = await start_call(settings, stt=stt)
    try:
        await call.greeted()
        await call.ask()
        await call.until(lambda: E.ERROR in call.types(), "the error")
        await call.until(lambda: len(call.transport.marks()) == 2, "the apology")
    finally:
        await call.end()
    error = call.first(E.ERROR)
    assert error.data["code"] == "stt-failed" and "decoder exploded" in error.data["message"]
    assert {"type": "error", "stage": "turn", "code": "stt-failed",
            "reason": "RuntimeError: decoder exploded"} in call.store.events
    assert [t["role"] for t in call.store.turns] == ["assistant"]  # only the greeting


async def test_one_tool_at_a_time_a_second_zero_does_not_dial_again(settings: Settings) -> None:
    settings = make_settings(Path(settings.data_dir).parent, transfer_number="+15550009999")
    call = await start_call(settings)
    try:
        await call.greeted()
        call.session.on_dtmf("0")
        await call.until(lambda: len(call.transport.marks()) >= 2, "the transfer phrase")
        call.session.on_dtmf("0")  # pressed again while the phrase plays and the call dials
        call.session.on_dtmf("0")
        call.ack()
        await call.until(lambda: ("transfer", "+15550009999") in call.transport.sent, "transfer")
        call.session.on_dtmf("0")
    finally:
        await call.end()
    assert call.transport.sent.count(("transfer", "+15550009999")) == 1
    assert [e["type"] for e in call.store.events].count("tool") == 1
