"""Bounded worker pools, one per engine kind, so blocking model calls never touch the event loop.

Separate pools keep a burst of one kind (say, four calls transcribing at once) from starving
another (an LLM reply already under way). The model pools every call shares (STT, KB, LLM) run
the most urgent waiting job first, not the oldest (:class:`RankedPool`): with four calls on two
cores a job waits for a worker, and it should be the one of the caller who has waited longest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


@dataclass(slots=True)
class Ticket:
    """How urgent one turn's work is. Confirmed work goes before speculative work (an answer
    started at a pause, core/speculation.py); among either, the caller whose voice ended first
    goes first. Mutable: a speculation whose turn is confirmed keeps its queued jobs and moves
    them up (:meth:`confirm`)."""

    due: float  # when the caller's voice ended (the session's clock)
    speculative: bool = False

    def confirm(self, due: float) -> None:
        self.due, self.speculative = due, False

    def rank(self) -> tuple[bool, float]:
        return self.speculative, self.due


# The ticket of the work the current task submits; work outside any call is confirmed and due
# when submitted, so it keeps its FIFO place among the calls' work.
TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("ticket", default=None)


def ranked(ticket: Ticket, coro: Coroutine[Any, Any, T], name: str | None = None
           ) -> asyncio.Task[T]:
    """``coro`` as a task whose worker jobs all carry ``ticket``."""
    ctx = contextvars.copy_context()
    ctx.run(TICKET.set, ticket)
    return asyncio.create_task(coro, name=name, context=ctx)


class RankedPool(Executor):
    """Threads that take the first-ranked waiting job (see :class:`Ticket`), not the oldest.

    A job's ticket is read when it is submitted, from the submitting task's context; its rank
    is read when a worker comes free, so a ticket confirmed meanwhile counts. Waiting jobs are
    few (one per call and kind at most), so picking the best is a scan.
    """

    def __init__(self, name: str, size: int) -> None:
        self._waiting: list[tuple[Ticket, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(max(1, size))]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        ticket = TICKET.get() or Ticket(time.monotonic())
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._waiting.append((ticket, next(self._order), future,
                                  functools.partial(fn, *args, **kwargs)))
            self._ready.notify()
        return future

    @property
    def waiting(self) -> int:
        """Jobs submitted and not yet taken by a worker."""
        with self._ready:
            return len(self._waiting)

    def _next(self) -> tuple[Future[Any], Callable[[], Any]] | None:
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if not self._waiting:
                return None
            best = min(self._waiting, key=lambda job: (job[0].rank(), job[1]))
            self._waiting.remove(best)
            return best[2], best[3]

    def _work(self) -> None:
        while (job := self._next()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as err:  # handed to whoever awaits the future
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._closed = True
            if cancel_futures:
                for _, _, future, _ in self._waiting:
                    future.cancel()
                self._waiting.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()


@dataclass
class Workers:
    stt: Executor = field(default_factory=lambda: RankedPool("stt", 2))
    llm: Executor = field(default_factory=lambda: RankedPool("llm", 2))
    tts: Executor = field(default_factory=lambda: RankedPool("tts", 2))
    kb: Executor = field(default_factory=lambda: RankedPool("kb", 2))
    vad: ThreadPoolExecutor = field(default_factory=lambda: _pool("vad", 1))
    turn: ThreadPoolExecutor = field(default_factory=lambda: _pool("turn", 1))

    @classmethod
    def sized(cls, llm_instances: int, max_calls: int, stt_instances: int = 2) -> Workers:
        """One worker per model replica: a job the pool hands on runs at once, so the pool's
        ranking decides who goes first (a pool wider than the replicas would hand jobs to a
        queue inside the model, first come first served)."""
        return cls(
            stt=RankedPool("stt", min(stt_instances, max_calls)),
            llm=RankedPool("llm", llm_instances),
            tts=RankedPool("tts", min(2, max_calls)),
            kb=RankedPool("kb", 2),
            vad=_pool("vad", 1),
            turn=_pool("turn", 1),  # ~0.1 s per pause: kept off the VAD's per-frame path
        )

    def queued(self) -> dict[str, int]:
        """Jobs waiting for a worker, per pool (``/metrics``): a deep STT or LLM queue is the
        first sign the box takes more calls than its models keep up with."""
        pools = {"stt": self.stt, "llm": self.llm, "tts": self.tts, "kb": self.kb,
                 "vad": self.vad, "turn": self.turn}
        return {name: _waiting(pool) for name, pool in pools.items()}

    def shutdown(self) -> None:
        for pool in (self.stt, self.llm, self.tts, self.kb, self.vad, self.turn):
            pool.shutdown(wait=False, cancel_futures=True)


def _waiting(pool: Executor) -> int:
    if isinstance(pool, RankedPool):
        return pool.waiting
    if isinstance(pool, ThreadPoolExecutor):  # the stdlib keeps no public count
        return pool._work_queue.qsize()
    return 0


class Background:
    """Fire-and-forget work a session must still finish before it closes (log writes, clears)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class OneAtATime:
    """One call's share of a pool every call uses: at most one job of its own in the pool, and
    a request that is still waiting when a newer one comes is dropped, never queued.

    A cancelled job that already runs cannot be stopped (the model is mid-call), so the next
    request waits for it rather than adding a second: a caller who never stops talking
    re-transcribes ever-longer audio, and without this each attempt queued beside the last on
    the STT workers every call shares.
    """

    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._running: concurrent.futures.Future[Any] | None = None
        self._latest = 0

    @property
    def busy(self) -> bool:
        return self._running is not None and not self._running.done()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the pool once this call's previous job is done; CancelledError if
        a newer request superseded this one meanwhile."""
        self._latest += 1
        ticket = self._latest
        while self._running is not None and not self._running.done():
            await asyncio.wait({asyncio.wrap_future(self._running)})
            if ticket != self._latest:
                raise asyncio.CancelledError("superseded by a newer request")
        ctx = contextvars.copy_context()
        self._running = job = self._pool.submit(ctx.run, fn, *args)
        return await asyncio.wrap_future(job)


def _pool(name: str, size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix=name)


async def run_in(pool: Executor, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call in ``pool`` and await its result."""
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


async def iterate_in(pool: Executor, make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Iterate a blocking generator wholly inside ``pool``, handing items to the event loop.

    When the consumer stops early (barge-in cancels it), the worker notices before its next
    item and closes the generator, which lets the engine release its resources.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stopped = False

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    if stopped:
                        break
                    put(item)
            finally:
                close = getattr(iterator, "close", None)
                if close:
                    close()
        except BaseException as err:  # handed to the consumer, re-raised there
            put(err)
        finally:
            put(_DONE)

    future = loop.run_in_executor(pool, work)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stopped = True
        if not future.done():
            future.add_done_callback(lambda f: f.exception())
