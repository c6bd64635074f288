"""What one call may cost, held with a clock moved by hand: deadlines, the audio budget, the
STT share, buffered audio, marks and waiters, history, a dying listener."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.config import Settings
from appliance.core import session as session_module
from appliance.core.agent import Conversation
from appliance.core.events import StageEventType as E
from appliance.core.playout import MARK_WAIT_S, MAX_OUTSTANDING_MARKS, Playout
from appliance.core.spoken import AgentTurn
from appliance.core.workers import OneAtATime, Workers, _pool
from appliance.engines.base import Transcript
from appliance.engines.fakes import FakeStt, FakeTts, FakeVad, FakeVadStream
from appliance.web.deadlines import SocketDeadlines
from appliance.web.flood import AudioBudget
from appliance.web.media_socket import OUTBOX_MESSAGES, MediaTransport
from tests.conftest import make_settings
from tests.session.harness import QUESTION, SILENCE, FakeClock, FakeTransport, start_call, tone

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_socket_that_never_starts_is_given_up_on_time() -> None:
    clock = FakeClock()
    deadlines = SocketDeadlines(clock, start_s=5, max_call_s=1800, media_s=15)
    expired = asyncio.ensure_future(deadlines.expired())
    clock.advance(4.9)
    await settle()
    assert not expired.done()
    clock.advance(0.1)
    await settle()
    assert expired.result() == "no start within 5 s"


async def test_media_keeps_a_call_alive_and_silence_on_the_wire_ends_it() -> None:
    clock = FakeClock()
    deadlines = SocketDeadlines(clock, start_s=5, max_call_s=1800, media_s=15)
    expired = asyncio.ensure_future(deadlines.expired())
    clock.advance(1)
    deadlines.on_start()
    for _ in range(10):  # audio every 10 s: never 15 s without
        clock.advance(10)
        await settle()
        deadlines.on_media()
    assert not expired.done()
    clock.advance(14.9)
    await settle()
    assert not expired.done()
    clock.advance(0.1)
    await settle()
    assert expired.result() == "no media for 15 s"


async def test_a_call_ends_at_the_maximum_length_even_while_audio_flows() -> None:
    clock = FakeClock()
    relay = SocketDeadlines(clock, start_s=5, max_call_s=60, media_s=None)
    expired = asyncio.ensure_future(relay.expired())
    relay.on_start()
    for _ in range(59):
        clock.advance(1)
        relay.on_media()
        await settle()
    assert not expired.done()
    clock.advance(1)
    await settle()
    assert expired.result() == "call longer than 60 s"


def test_the_audio_budget_is_real_time_plus_a_burst() -> None:
    now = [0.0]
    budget = AudioBudget(2.0, 10.0, "test", now=lambda: now[0])
    # Real time, for ten minutes: nothing dropped.
    for _ in range(30_000):
        now[0] += 0.02
        assert budget.admit(0.02)
    # A burst of about 2 s passes (the allowance); more does not.
    assert budget.admit(1.0) and budget.admit(0.95) and not budget.admit(0.1)
    # 1 s payloads as fast as they come: dropped, then the socket must go.
    dropped = sum(not budget.admit(1.0) for _ in range(12))
    assert dropped == 12 and budget.exhausted
    now[0] += 1.0
    assert budget.admit(1.0)  # the budget refills with time


async def test_one_call_holds_one_stt_worker_and_a_superseded_request_is_dropped() -> None:
    pool = _pool("stt", 2)
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> str:
        gate.wait(30)
        ran.append(name)
        return name

    share = OneAtATime(pool)
    first = asyncio.ensure_future(share.run(job, "first"))
    await settle()
    first.cancel()  # cancelled while it runs: the worker still finishes it
    second = asyncio.ensure_future(share.run(job, "second"))
    await settle()
    third = asyncio.ensure_future(share.run(job, "third"))
    await settle()
    assert share.busy and not second.done()
    gate.set()
    assert await third == "third"
    assert second.cancelled()  # superseded while it waited: never queued, never ran
    assert ran == ["first", "third"]
    pool.shutdown()


class CountingStt(FakeStt):
    """Blocks until the gate opens; keeps the most transcriptions it ever ran at once."""

    def __init__(self) -> None:
        super().__init__([QUESTION])
        self.gate = threading.Event()
        self.running = self.most = 0
        self.count_lock = threading.Lock()

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        with self.count_lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(30)
            return super().transcribe(audio16k)
        finally:
            with self.count_lock:
                self.running -= 1


async def test_a_caller_who_never_stops_talking_holds_bounded_audio_and_one_stt_job(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_utterance_s=1.0, hold_after_ms=0)
    stt = CountingStt()
    call = await start_call(settings, stt=stt, workers=Workers.sized(1, 4))  # 2 STT workers
    listener = call.session._listener
    buffered: list[int] = []
    try:
        await call.greeted()
        for _ in range(20):  # a radio held to the phone: 20 s without a pause
            call.say(tone(1.0))
            await call.until(lambda: call.session._inbox.empty(), "audio heard")
            buffered.append(call.session._listener.buffered_samples)
        asked = sum(t is E.STT_START for t in call.types())
        stt.gate.set()
        call.say(SILENCE * 30)
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    assert asked >= 10  # every forced end asked for a transcription...
    assert len(stt.calls) <= 3 and stt.most == 1  # ...one at a time, superseded ones dropped
    assert max(stt.calls) <= listener.max_samples  # none longer than one maximal utterance
    assert max(buffered) <= 2 * listener.max_samples  # the carry-over never grows past it


class DyingVad(FakeVad):
    """Its streams raise once when told to (a bug in the listener's path)."""

    def __init__(self) -> None:
        super().__init__()
        self.die = False

    def stream(self) -> FakeVadStream:
        vad = self
        stream = super().stream()
        hear = stream.probabilities

        def probabilities(audio16k: np.ndarray) -> list[float]:
            if vad.die:
                vad.die = False
                raise RuntimeError("vad exploded")
            return hear(audio16k)

        stream.probabilities = probabilities  # type: ignore[method-assign]
        return stream


async def test_a_listener_that_dies_is_logged_apologised_for_and_restarted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, hold_after_ms=0)
    vad = DyingVad()
    call = await start_call(settings, vad=vad)
    try:
        await call.greeted()
        greeting_marks = len(call.transport.marks())
        vad.die = True
        call.say(SILENCE)
        await call.until(lambda: len(call.transport.marks()) > greeting_marks, "the apology")
        call.ack()
        await call.ask()  # the restarted listener hears the next question
        await call.until(lambda: E.TURN_END in call.types(), "the answer")
    finally:
        await call.end()
    errors = [e for e in call.store.events if e["type"] == "error"]
    assert errors[0]["stage"] == "listener" and "vad exploded" in errors[0]["reason"]
    assert "listener failed" in caplog.text
    assert [t["text"] for t in call.store.turns if t["role"] == "user"] == [QUESTION]


async def test_marks_and_their_waiters_stay_bounded_when_the_peer_never_echoes() -> None:
    clock = FakeClock()
    playout = Playout(FakeTransport(), clock, on_audio=lambda: None)
    turn = AgentTurn(idx=1)
    async with playout.lock:
        for _ in range(MAX_OUTSTANDING_MARKS + 50):
            await playout.play(turn, "hi", b"\xff" * 160)
    assert len(playout._outstanding) == MAX_OUTSTANDING_MARKS
    waiting = asyncio.ensure_future(playout.wait_played(playout.last_mark))
    await settle()
    assert playout.waiting == 1
    clock.advance(MARK_WAIT_S)
    await waiting
    assert playout.waiting == 0  # the timed-out waiter is gone
    cancelled = asyncio.ensure_future(playout.wait_played(playout.last_mark))
    await settle()
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert playout.waiting == 0  # and so is a cancelled one


def test_history_keeps_the_latest_turns_only() -> None:
    conversation = Conversation(session_id="CA", max_messages=40)
    for i in range(500):
        conversation.add("user", f"question {i}")
        conversation.add("assistant", f"answer {i}")
    assert len(conversation.history) == 40
    assert conversation.history[-1].content == "answer 499"


class StuckSocket:
    """A peer that stopped reading: every send blocks."""

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()


async def test_the_outbox_is_bounded_and_a_peer_that_stops_reading_ends_the_call() -> None:
    from appliance.telephony.twilio_calls import TwilioCalls

    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    transport = MediaTransport(StuckSocket(), "MZ" + "0" * 32, "CA" + "0" * 32,  # type: ignore[arg-type]
                               TwilioCalls("", ""), ended)
    for _ in range(OUTBOX_MESSAGES + 500):
        await transport.send_audio(SILENCE)
    assert transport._queue.qsize() <= OUTBOX_MESSAGES
    assert ended.result().startswith("peer stopped reading")
    transport.sender.cancel()
    await asyncio.gather(transport.sender, return_exceptions=True)


async def test_a_caller_who_talks_on_is_held_to_its_share_of_stt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "STT_BURST_S", 3.0)  # 2 s of audio a second, 3 s burst
    settings = make_settings(tmp_path, hold_after_ms=0)
    stt = FakeStt([QUESTION])
    call = await start_call(settings, stt=stt)
    share = call.session.stt_share
    try:
        await call.greeted()
        for _ in range(3):  # a sentence, a breath, on and on: each pause is transcribed
            call.say(tone(1.0) + SILENCE * 25)
            await call.until(lambda: call.session._inbox.empty(), "heard")
            await settle()
        asked = sum(t is E.STT_START for t in call.types())
        done = len(stt.calls)
        assert asked == 3 and done < asked  # the last one waits: the call owes audio
        assert share.debt_s > 0 and call.clock.sleeping
        call.clock.advance(share.debt_s / share.rate + 0.01)
        await call.until(lambda: len(stt.calls) > done, "transcribed once repaid")
    finally:
        await call.end()
    assert share.waited_s > 0


async def test_a_caller_who_talks_over_every_answer_is_answered_after_a_longer_pause(
        settings: Settings) -> None:
    call = await start_call(settings, tts=FakeTts(ms=2000, chunk_ms=100))
    session = call.session

    def turns() -> int:
        return call.types().count(E.TURN_START)

    def clears() -> int:
        return call.transport.sent.count(("clear", None))

    def answering(n: int) -> Callable[[], bool]:
        return lambda: turns() == n and session.playout.playing

    def cleared(n: int) -> Callable[[], bool]:
        return lambda: clears() == n

    def answer_sent() -> bool:
        """The latest turn's reply is sent whole (its last mark too)."""
        types = call.types()
        return E.TURN_END in types[len(types) - types[::-1].index(E.TURN_START):]

    async def heard() -> None:
        await call.until(lambda: session._inbox.empty(), "heard")
        for _ in range(20):
            await settle()

    try:
        await call.greeted()
        await call.ask()  # a question and 0.6 s of silence: answered
        for n in range(1, session_module.TALKED_OVER + 1):
            await call.until(answering(n), "answering")
            assert not session._listener.patient
            await call.ask()  # ...talked over, and the next question after 0.6 s
            await call.until(cleared(n), "barge-in")
        await heard()
        assert session._listener.patient
        assert {"type": "patient", "talked_over": session_module.TALKED_OVER} in call.store.events
        asked = turns()
        assert asked == session_module.TALKED_OVER  # the last 0.6 s pause ended no turn
        call.say(SILENCE * 25)  # 1.1 s of silence in all: that does
        await call.until(lambda: turns() == asked + 1, "the turn after a long pause")
        # every piece of the answer sent (it has two sentences), then heard to the end: the
        # usual turn-taking again
        await call.until(answer_sent, "the answer")
        call.ack()
        await call.until(lambda: not session._listener.patient, "patience lifted")
        await call.ask()
        await call.until(lambda: turns() == asked + 2, "a turn after 0.6 s again")
    finally:
        await call.end()
