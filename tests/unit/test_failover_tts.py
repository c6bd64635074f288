"""The circuit breaker and the ElevenLabs → Piper failover, with in-process fakes, fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from appliance.core.audio import TELEPHONE_RATE
from appliance.engines.base import EngineInfo
from appliance.engines.breaker import BreakerState, CircuitBreaker
from appliance.engines.elevenlabs_tts import (
    AuthError,
    NetworkError,
    RateLimited,
    ServerError,
    StreamDropped,
    retry_after_s,
)
from appliance.engines.failover_tts import (
    FailoverTts,
    unspoken,
    with_cloud_voice,
)
from appliance.engines.fakes import FakeTts
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio  # asyncio backend (anyio's default)

LOGGER = "appliance.engines.failover_tts"
KEY = "sk_live_0123456789abcdef"
PRIMARY_BYTE, FALLBACK_BYTE = b"\x11", b"\x22"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Step:
    """One primary request: wait ``delay_s``, then stream ``audio_s`` of audio in 100 ms chunks."""

    audio_s: float = 1.0
    delay_s: float = 0.0
    error: Exception | None = None  # raised before any audio, or at ``drop_s``
    drop_s: float | None = None  # the stream breaks after this much audio
    stall_at_s: float | None = None  # the stream pauses once, here, for ``stall_s``
    stall_s: float = 0.0


class ScriptedPrimary:
    """Plays ElevenLabs in-process: each request follows the next step (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.info = EngineInfo(slot="tts", name="elevenlabs", version="test")
        self.steps = list(steps) or [Step()]
        self.texts: list[str] = []
        self.closed = 0
        self.warmed = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        try:
            await asyncio.sleep(step.delay_s)
            if step.error is not None and step.drop_s is None:
                raise step.error
            chunk = PRIMARY_BYTE * (TELEPHONE_RATE // 10)
            for i in range(round(step.audio_s * 10)):
                if step.drop_s is not None and i == round(step.drop_s * 10):
                    raise step.error or StreamDropped("stream dropped", i * len(chunk))
                if step.stall_at_s is not None and i == round(step.stall_at_s * 10):
                    await asyncio.sleep(step.stall_s)
                yield chunk
        finally:
            self.closed += 1

    async def warm(self) -> None:
        self.warmed += 1

    async def aclose(self) -> None:
        pass


def failover(*steps: Step, failures: int = 3, cooldown: float = 30.0, first_byte_s: float = 0.1,
             clock: Clock | None = None) -> tuple[FailoverTts, ScriptedPrimary, FakeTts]:
    primary = ScriptedPrimary(*steps)
    fallback = FakeTts(ms=200, chunk_ms=100)
    fallback._chunk = FALLBACK_BYTE * len(fallback._chunk)  # tell the voices apart
    breaker = CircuitBreaker(failures, cooldown, clock=clock or Clock())
    tts = FailoverTts(primary, fallback, first_byte_s=first_byte_s, breaker=breaker)
    return tts, primary, fallback


async def say(tts: FailoverTts, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)


def records(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


# --- the breaker -----------------------------------------------------------------------------


def test_breaker_opens_after_n_failures_then_one_trial_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 30.0, clock=clock)
    assert not breaker.failure() and not breaker.failure() and breaker.allow()
    assert breaker.failure() and breaker.state is BreakerState.OPEN
    assert not breaker.allow() and breaker.retry_in == 30.0
    clock.now += 30.0
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one trial at a time
    assert breaker.failure() and breaker.state is BreakerState.OPEN  # the trial failed: re-open
    clock.now += 30.0
    assert breaker.allow()
    assert breaker.success() and breaker.closed and breaker.failures == 0
    assert not breaker.success()  # already closed: nothing to log


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(2, 30.0, clock=Clock())
    breaker.failure()
    breaker.success()
    assert not breaker.failure() and breaker.closed


def test_rate_limit_honours_retry_after_else_doubles_up_to_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    assert breaker.back_off(7.0) and breaker.retry_in == 7.0
    clock.now += 7.0
    assert breaker.allow()
    assert breaker.back_off(None) and breaker.retry_in == 2.0  # second 429 in a row
    clock.now += 2.0
    assert breaker.allow()
    assert breaker.back_off(None) and breaker.retry_in == 4.0
    for _ in range(5):
        breaker.back_off(None)  # in-flight requests that were rate-limited too
    assert breaker.retry_in == 10.0  # never longer than the cool-down


def test_disabled_is_final_and_an_abandoned_trial_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.failure()
    clock.now += 5.0
    assert breaker.allow() and not breaker.allow()
    breaker.abandon()
    assert breaker.allow()  # the next sentence may try
    assert breaker.disable() and not breaker.disable()
    clock.now += 1e6
    assert not breaker.allow() and not breaker.success() and not breaker.failure()


def test_retry_after_header_forms() -> None:
    assert retry_after_s("12") == 12.0 and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("soon") is None


def test_unspoken_restarts_at_the_word_then_playing() -> None:
    text = "We open at nine in the morning on weekdays."
    assert unspoken(text, 0.0, 15.0) == text
    assert unspoken(text, 1.2, 15.0) == "in the morning on weekdays."  # 18 chars said
    assert unspoken(text, 60.0, 15.0) == "weekdays."


# --- the failover ----------------------------------------------------------------------------


async def test_a_healthy_primary_speaks_everything(caplog: pytest.LogCaptureFixture) -> None:
    tts, primary, fallback = failover(Step(audio_s=0.5))
    audio = await say(tts, "Hello there.")
    assert audio == PRIMARY_BYTE * 4000 and not fallback.texts
    assert tts.last_provider == "elevenlabs"
    assert not records(caplog, logging.WARNING)


async def test_slow_first_byte_falls_back_per_sentence_and_logs_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # A primary that would answer only after the test's timeout: waiting for it cannot pass.
    tts, primary, fallback = failover(Step(delay_s=600.0), first_byte_s=0.05)
    for text in ("One.", "Two."):
        assert set(await say(tts, text)) == {FALLBACK_BYTE[0]}
        assert tts.last_provider == "piper"
    assert fallback.texts == ["One.", "Two."] and primary.closed == 2
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "no audio within 50 ms" in warnings[0]


async def test_breaker_skips_the_primary_then_a_trial_brings_it_back(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tts, primary, fallback = failover(Step(error=ServerError("HTTP 500")), Step(error=ServerError(
        "HTTP 500")), Step(audio_s=0.3), failures=2, cooldown=30.0, clock=clock)
    for text in ("a.", "b.", "c."):
        await say(tts, text)
    assert primary.texts == ["a.", "b."] and fallback.texts == ["a.", "b.", "c."]
    clock.now += 30.0
    assert set(await say(tts, "d.")) == {PRIMARY_BYTE[0]}
    assert tts.last_provider == "elevenlabs"
    lines = records(caplog)
    assert len(lines) == 3, lines  # failed → off for 30 s → back
    assert "HTTP 500" in lines[0] and "trying again in 30 s" in lines[1]
    assert "answers again" in lines[2]
    assert tts.switches == {("elevenlabs", "piper", "error"): 1,
                            ("piper", "elevenlabs", "recovered"): 1}


async def test_a_drop_mid_sentence_is_finished_by_the_fallback_from_the_word_playing(
        caplog: pytest.LogCaptureFixture) -> None:
    text = "We open at nine in the morning on weekdays."
    tts, primary, fallback = failover(Step(audio_s=3.0, drop_s=1.2))
    audio = await say(tts, text)
    assert audio.startswith(PRIMARY_BYTE * 9600) and audio.endswith(FALLBACK_BYTE * 1600)
    assert fallback.texts == ["in the morning on weekdays."]
    assert tts.last_provider == "elevenlabs+piper"
    assert "stream dropped" in records(caplog, logging.WARNING)[0]


async def test_a_long_stall_hands_over_before_the_audio_sent_ahead_runs_out() -> None:
    text = "We open at nine in the morning on weekdays."
    tts, primary, fallback = failover(Step(audio_s=3.0, stall_at_s=1.2, stall_s=5.0),
                                      first_byte_s=0.1)
    started = asyncio.get_running_loop().time()
    audio = await say(tts, text)
    took = asyncio.get_running_loop().time() - started
    assert 1.0 < took < 1.3  # 1.2 s of audio was ahead: waited while Piper still had 0.1 s
    assert audio.endswith(FALLBACK_BYTE * 1600)
    assert fallback.texts == ["in the morning on weekdays."]


async def test_a_short_stall_with_audio_ahead_is_no_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    tts, primary, fallback = failover(Step(audio_s=2.0, stall_at_s=1.0, stall_s=0.4),
                                      first_byte_s=0.1)
    assert await say(tts, "A sentence long enough to stream.") == PRIMARY_BYTE * 16000
    assert not fallback.texts and not records(caplog, logging.WARNING)


async def test_a_rejected_key_switches_the_primary_off_with_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    tts, primary, fallback = failover(Step(error=AuthError("HTTP 401 (invalid_api_key)")))
    for text in ("a.", "b.", "c."):
        await say(tts, text)
    assert primary.texts == ["a."] and fallback.texts == ["a.", "b.", "c."]
    lines = records(caplog)
    assert len(lines) == 1 and "rejected the API key" in lines[0]
    assert caplog.records[-1].levelno == logging.ERROR and KEY not in caplog.text


async def test_rate_limit_backs_off_for_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tts, primary, fallback = failover(Step(error=RateLimited("HTTP 429", 12.0)), Step(),
                                      clock=clock)
    await say(tts, "a.")
    await say(tts, "b.")
    assert primary.texts == ["a."]
    clock.now += 12.0
    await say(tts, "c.")
    assert primary.texts == ["a.", "c."] and fallback.texts == ["a.", "b."]
    assert "backing off 12 s" in records(caplog, logging.WARNING)[0]


async def test_a_barge_in_is_no_verdict_on_the_primary() -> None:
    clock = Clock()
    tts, primary, fallback = failover(Step(error=ServerError("HTTP 500")), Step(audio_s=2.0),
                                      failures=1, clock=clock)
    await say(tts, "a.")
    clock.now += 30.0
    stream = tts.synthesize("b.")
    assert await anext(stream) == PRIMARY_BYTE * 800  # the half-open trial is speaking …
    await stream.aclose()  # … and the caller barges in
    assert primary.closed == 2 and tts._breaker.state is BreakerState.HALF_OPEN
    await say(tts, "c.")  # the next sentence may take the trial
    assert primary.texts == ["a.", "b.", "c."] and tts.last_provider == "elevenlabs"


async def test_cancellation_propagates_and_closes_the_primary() -> None:
    tts, primary, _ = failover(Step(audio_s=5.0, stall_at_s=0.1, stall_s=10.0), first_byte_s=5.0)

    async def speak() -> None:
        async for _ in tts.synthesize("long."):
            pass

    task = asyncio.create_task(speak())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert primary.closed == 1 and tts._breaker.failures == 0


async def test_phrases_are_cached_per_voice_and_follow_the_voice_in_use() -> None:
    clock = Clock()
    tts, primary, fallback = failover(Step(audio_s=0.2), failures=1, clock=clock)
    phrases = await tts.prewarm(["Hello!", "Goodbye!"])
    assert primary.texts == ["Hello!", "Goodbye!"] and fallback.texts == ["Hello!", "Goodbye!"]
    assert set(phrases["Hello!"]) == {PRIMARY_BYTE[0]} and len(phrases) == 2
    assert await say(tts, "Goodbye!") == phrases["Goodbye!"]
    assert len(primary.texts) == 2 and tts.last_provider == "elevenlabs"  # served from cache
    primary.steps = [Step(error=NetworkError("network error"))]
    await say(tts, "Something new.")  # fails: breaker opens
    assert set(phrases["Hello!"]) == {FALLBACK_BYTE[0]}
    assert set(await say(tts, "Hello!")) == {FALLBACK_BYTE[0]} and tts.last_provider == "piper"
    assert "Nope" not in phrases and phrases.get("Nope") is None


async def test_phrases_missing_a_voice_are_fetched_when_it_comes_back() -> None:
    clock = Clock()
    tts, primary, fallback = failover(Step(error=NetworkError("network error")), Step(audio_s=0.2),
                                      clock=clock)
    phrases = await tts.prewarm(["Hello!", "Goodbye!"])
    assert primary.texts == ["Hello!"]  # the first failure at start-up opened the breaker
    assert set(phrases["Goodbye!"]) == {FALLBACK_BYTE[0]}
    clock.now += 30.0
    await say(tts, "Back again.")
    assert tts._warming is not None
    await tts._warming
    assert set(phrases["Hello!"]) == {PRIMARY_BYTE[0]} and set(phrases["Goodbye!"]) == {
        PRIMARY_BYTE[0]}


async def test_no_network_at_start_up_means_the_fallback_from_the_first_word(
        caplog: pytest.LogCaptureFixture) -> None:
    tts, primary, fallback = failover(Step(error=NetworkError("network error: refused")))
    await tts.prewarm(["Hello!"])
    await say(tts, "First sentence.")
    await say(tts, "Second sentence.")
    assert primary.texts == ["Hello!"] and tts.last_provider == "piper"
    lines = records(caplog)
    assert len(lines) == 1 and "at start-up" in lines[0] and "refused" in lines[0]


async def test_each_task_reads_its_own_last_provider() -> None:
    tts, primary, fallback = failover(Step(audio_s=0.3, delay_s=0.05), Step(
        error=ServerError("HTTP 503")))
    seen: dict[str, str] = {}

    async def call(name: str, pause: float) -> None:
        await asyncio.sleep(pause)
        await say(tts, name)
        await asyncio.sleep(0.1)  # the other call speaks meanwhile
        seen[name] = tts.last_provider

    await asyncio.gather(call("first.", 0.0), call("second.", 0.01))
    assert seen == {"first.": "elevenlabs", "second.": "piper"}


async def test_warming_only_while_the_primary_is_in_use() -> None:
    tts, primary, _ = failover(Step(error=ServerError("HTTP 500")), failures=1)
    await tts.warm()
    await say(tts, "a.")  # fails: breaker opens
    await tts.warm()
    assert primary.warmed == 1


def test_no_key_means_local_alone_said_once(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    local = FakeTts()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert with_cloud_voice(make_settings(tmp_path), local) is local
    assert len(records(caplog)) == 1 and "no ElevenLabs API key" in records(caplog)[0]


async def test_with_a_key_elevenlabs_goes_first(tmp_path) -> None:
    settings = make_settings(tmp_path, elevenlabs_api_key=KEY, elevenlabs_first_byte_ms=300)
    tts = with_cloud_voice(settings, FakeTts())
    assert isinstance(tts, FailoverTts) and tts.info.name == "elevenlabs+fake-tts"
    assert KEY not in repr(tts.info)
    await tts.aclose()
