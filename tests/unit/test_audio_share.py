"""A call's share of transcription over time, on a clock the test moves: who waits, how long."""

from __future__ import annotations

import asyncio

import pytest

from appliance.core.share import AudioShare
from tests.session.harness import FakeClock

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_normal_caller_is_never_held_back() -> None:
    clock = FakeClock()
    share = AudioShare(clock, rate=2.0, burst_s=30.0)
    for _ in range(100):  # a 4 s utterance transcribed at a pause and again after, every 6 s
        await share.take(3.0)
        await share.take(4.0)
        clock.advance(6.0)
    assert share.waited_s == 0


async def test_a_call_that_overspends_waits_until_it_is_even() -> None:
    clock = FakeClock()
    share = AudioShare(clock, rate=2.0, burst_s=30.0)
    for _ in range(2):
        await share.take(20.0)  # back to back: 10 s beyond the burst
    assert share.debt_s == 10.0
    waiting = asyncio.ensure_future(share.take(20.0))
    await settle()
    assert not waiting.done()
    clock.advance(4.9)  # repaid at 2 s of audio a second: 5 s
    await settle()
    assert not waiting.done()
    clock.advance(0.1)
    await settle()
    assert waiting.done() and share.waited_s == 5.0 and share.debt_s == 20.0


async def test_a_request_cancelled_while_it_waits_is_never_charged() -> None:
    clock = FakeClock()
    share = AudioShare(clock, rate=1.0, burst_s=1.0)
    await share.take(3.0)
    waiting = asyncio.ensure_future(share.take(50.0))
    await settle()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert share.debt_s == 2.0
