"""The shared pools' order: the caller who has waited longest first, speculation last."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from appliance.core.speaking import _queued_behind
from appliance.core.spoken import AgentTurn, SpokenPiece
from appliance.core.workers import TICKET, RankedPool, Ticket, Workers, ranked, run_in

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Recorder:
    """Jobs that note their name when they run; the first waits for the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.ran: list[str] = []

    def job(self, name: str) -> Callable[[], str]:
        def run() -> str:
            if not self.ran:
                self.gate.wait(30)
            self.ran.append(name)
            return name
        return run


async def submit_all(pool: RankedPool, jobs: list[tuple[str, Ticket | None]],
                     recorder: Recorder) -> list[asyncio.Task[str]]:
    tasks = []
    for name, ticket in jobs:
        work = run_in(pool, recorder.job(name))
        tasks.append(ranked(ticket, work) if ticket is not None
                     else asyncio.ensure_future(work))
        await settle()  # submitted in this order
    return tasks


async def test_confirmed_turns_go_first_the_longest_waiting_caller_first() -> None:
    pool = RankedPool("test", 1)
    recorder = Recorder()
    tasks = await submit_all(pool, [
        ("busy", Ticket(1.0)),  # holds the one worker until the gate opens
        ("speculative", Ticket(2.0, speculative=True)),
        ("late caller", Ticket(5.0)),
        ("early caller", Ticket(3.0)),
    ], recorder)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    pool.shutdown()
    assert recorder.ran == ["busy", "early caller", "late caller", "speculative"]


async def test_a_speculation_confirmed_while_it_waits_moves_up() -> None:
    pool = RankedPool("test", 1)
    recorder = Recorder()
    early = Ticket(2.0, speculative=True)
    tasks = await submit_all(pool, [
        ("busy", Ticket(1.0)),
        ("other caller's speculation", Ticket(1.5, speculative=True)),
        ("this caller's early words", early),
        ("a later caller", Ticket(4.0)),
    ], recorder)
    early.confirm(3.0)  # the pause was the end of the turn
    recorder.gate.set()
    await asyncio.gather(*tasks)
    pool.shutdown()
    assert recorder.ran == ["busy", "this caller's early words", "a later caller",
                            "other caller's speculation"]


async def test_work_outside_a_call_keeps_its_place_in_line() -> None:
    pool = RankedPool("test", 1)
    recorder = Recorder()
    tasks = await submit_all(pool, [("busy", None), ("first", None), ("second", None)], recorder)
    recorder.gate.set()
    await asyncio.gather(*tasks)
    pool.shutdown()
    assert recorder.ran == ["busy", "first", "second"]


async def test_a_job_cancelled_while_it_waits_never_runs_and_errors_reach_the_caller() -> None:
    pool = RankedPool("test", 1)
    recorder = Recorder()
    busy, dropped = await submit_all(pool, [("busy", None), ("dropped", None)], recorder)
    dropped.cancel()
    await settle()

    def fails() -> None:
        raise ValueError("model exploded")

    failing = asyncio.ensure_future(run_in(pool, fails))
    recorder.gate.set()
    assert await busy == "busy"
    with pytest.raises(ValueError, match="model exploded"):
        await failing
    pool.shutdown()
    assert recorder.ran == ["busy"]
    with pytest.raises(RuntimeError):
        pool.submit(recorder.job("late"))


def test_a_later_sentence_is_due_when_the_caller_runs_out_of_audio() -> None:
    turn = AgentTurn(idx=1, play_started=100.0, pieces=[
        SpokenPiece("We open at nine.", "t1-1", 1.5, played=True),
        SpokenPiece("See you then.", "t1-2", 1.25)])
    outer = Ticket(90.0)
    token = TICKET.set(outer)
    try:
        with _queued_behind(turn):
            inner = TICKET.get()
            assert inner is not None and inner.rank() == (False, 101.25)
        with _queued_behind(AgentTurn(idx=2)):  # nothing sent yet: the turn's own ticket
            assert TICKET.get() is outer
        assert TICKET.get() is outer
    finally:
        TICKET.reset(token)


def test_the_stt_pool_has_one_worker_per_model_replica() -> None:
    """A wider pool would hand jobs to the model's own first-come queue, past the ranking."""
    for replicas, calls, workers in ((1, 4, 1), (2, 4, 2), (3, 2, 2)):
        pools = Workers.sized(1, calls, stt_instances=replicas)
        try:
            assert isinstance(pools.stt, RankedPool) and len(pools.stt._threads) == workers
        finally:
            pools.shutdown()
