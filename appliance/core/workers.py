"""Bounded worker pools, one per engine kind, so blocking model calls never touch the event loop.

Separate pools keep a burst of one kind (say, four calls transcribing at once) from starving
another (an LLM reply already under way).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


@dataclass
class Workers:
    stt: ThreadPoolExecutor = field(default_factory=lambda: _pool("stt", 2))
    llm: ThreadPoolExecutor = field(default_factory=lambda: _pool("llm", 2))
    tts: ThreadPoolExecutor = field(default_factory=lambda: _pool("tts", 2))
    kb: ThreadPoolExecutor = field(default_factory=lambda: _pool("kb", 2))
    vad: ThreadPoolExecutor = field(default_factory=lambda: _pool("vad", 1))
    turn: ThreadPoolExecutor = field(default_factory=lambda: _pool("turn", 1))

    @classmethod
    def sized(cls, llm_instances: int, max_calls: int) -> Workers:
        return cls(
            stt=_pool("stt", min(2, max_calls)),
            llm=_pool("llm", llm_instances),
            tts=_pool("tts", min(2, max_calls)),
            kb=_pool("kb", 2),
            vad=_pool("vad", 1),
            turn=_pool("turn", 1),  # ~0.1 s per pause: kept off the VAD's per-frame path
        )

    def queued(self) -> dict[str, int]:
        """Jobs waiting for a worker, per pool (``/metrics``): a deep STT or LLM queue is the
        first sign the box takes more calls than its models keep up with."""
        pools = {"stt": self.stt, "llm": self.llm, "tts": self.tts, "kb": self.kb,
                 "vad": self.vad, "turn": self.turn}
        return {name: pool._work_queue.qsize() for name, pool in pools.items()}

    def shutdown(self) -> None:
        for pool in (self.stt, self.llm, self.tts, self.kb, self.vad, self.turn):
            pool.shutdown(wait=False, cancel_futures=True)


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

    def __init__(self, pool: ThreadPoolExecutor) -> None:
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


async def run_in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call in ``pool`` and await its result."""
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


async def iterate_in(pool: ThreadPoolExecutor, make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
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
