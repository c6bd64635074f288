"""A call's share of a worker pool over time, on a clock the test moves: who waits, and how long."""

from __future__ import annotations

import asyncio

import pytest

from appliance.core.share import WorkerShare
from tests.session.harness import FakeClock

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_normal_caller_is_never_held_back() -> None:
    clock = FakeClock()
    share = WorkerShare.of_pool(clock, workers=2, calls=4)  # half a worker, 10 s of burst
    for _ in range(50):  # three seconds of STT a turn (a loaded box), a turn every 6 s
        await share.wait_turn()
        share.spent(3.0)
        clock.advance(6.0)
    assert share.waited_s == 0


async def test_a_call_that_overspends_waits_until_it_is_even() -> None:
    clock = FakeClock()
    share = WorkerShare(clock, share=0.5, burst_s=10.0)
    share.spent(14.0)  # back to back jobs: 4 s beyond the burst
    waiting = asyncio.ensure_future(share.wait_turn())
    await settle()
    assert not waiting.done() and share.debt_s == 4.0
    clock.advance(7.9)  # repaid at half a second per second: 8 s
    await settle()
    assert not waiting.done()
    clock.advance(0.1)
    await settle()
    assert waiting.done() and share.waited_s == 8.0


async def test_a_share_is_never_more_than_the_whole_pool() -> None:
    assert WorkerShare.of_pool(FakeClock(), workers=2, calls=1).share == 1.0
    assert WorkerShare.of_pool(FakeClock(), workers=2, calls=5).share == 0.4


async def test_a_job_is_charged_even_when_its_request_was_cancelled() -> None:
    clock = FakeClock()
    share = WorkerShare(clock, share=0.5, burst_s=1.0)
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), asyncio.Event()

    def job() -> str:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(30)
        return "done"

    request = asyncio.ensure_future(asyncio.to_thread(share.timed(job, loop)))
    await started.wait()
    request.cancel()  # the caller spoke on; the worker runs on
    clock.advance(3.0)
    release.set()
    await asyncio.gather(request, return_exceptions=True)
    while share.debt_s == 0:
        await asyncio.sleep(0.001)
    assert share.debt_s == 2.0  # 3 s of worker time against a 1 s budget
