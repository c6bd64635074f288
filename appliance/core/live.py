"""Calls in progress as they happen, for live watchers (the console's Live page over SSE).

The one :class:`CallRecorder` of each call (both front doors) publishes here: the call opening,
each change of state, each caller utterance and each agent sentence as it is spoken, the call
closing. Watchers subscribe and get a snapshot, then those changes.

A call must never wait for a watcher, so publishing is a ``put_nowait`` per subscriber into a
bounded queue. A subscriber that falls ``queue_size`` events behind (a slow browser, a stalled
connection) loses its backlog and gets a fresh snapshot instead: its page jumps ahead, the call
never notices. Publishing costs one dict and a few queue puts per event, a handful of events per
turn; the 4-call benchmark with and without two watchers (``appliance bench
--console-watchers``) is how that is checked.

In a cluster (README "Scale-out") the feed also carries the other boxes' calls: ``listener``
hands each local event to the web layer's Redis publisher (``web.cluster_live``), which merges
the other boxes' events back in through the ``remote_*`` methods; every call is then tagged with
the ``box`` that holds it. Without a cluster none of that is set and nothing changes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

QUEUE_SIZE = 256  # events a subscriber may fall behind before it is resynchronised
MAX_LINES = 200  # transcript lines kept per live call (a snapshot carries at most these)


class CallState(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


@dataclass
class LiveCall:
    call_sid: str
    mode: str
    started: float  # wall clock
    state: str = CallState.LISTENING.value
    lines: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    box: str = ""  # the box holding the call, in a cluster
    said: int = 0  # lines so far, counting those the deque dropped: other boxes skip repeats

    def to_json(self) -> dict[str, Any]:
        data = {"call_sid": self.call_sid, "mode": self.mode, "started": self.started,
                "state": self.state, "turns": list(self.lines)}
        return data | {"box": self.box} if self.box else data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveCall:
        """Another box's call as its publisher wrote it (``to_json`` plus ``said``)."""
        turns = [{"role": str(t["role"]), "text": str(t["text"])} for t in data["turns"]]
        return cls(str(data["call_sid"]), str(data["mode"]), float(data["started"]),
                   str(data["state"]), deque(turns, maxlen=MAX_LINES), str(data["box"]),
                   int(data["said"]))


class FeedClosed(RuntimeError):
    """The server is draining or stopping: no new watchers."""


RESYNC = "snapshot"  # the queue item that stands for "send a fresh snapshot"
CLOSE = "bye"  # the queue item that ends a subscription


@dataclass(eq=False)
class Subscription:
    """One watcher's queue of ``(event, data)``; see :meth:`LiveFeed.subscribe`."""

    feed: LiveFeed
    queue: asyncio.Queue[tuple[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE))
    resyncs: int = 0  # times it fell behind and its backlog was replaced by a snapshot

    def offer(self, item: tuple[str, Any]) -> None:
        """Never blocks: a full queue is emptied and replaced by one resync marker."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resyncs += 1
            self.queue.put_nowait((RESYNC, None) if item[0] != CLOSE else item)

    async def next(self, timeout: float) -> tuple[str, Any] | None:
        """The next event (a resync comes back as a full snapshot); None after ``timeout``."""
        try:
            event, data = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if event == RESYNC:  # the snapshot covers everything queued so far: drop it
            closing = False
            while not self.queue.empty():
                closing = closing or self.queue.get_nowait()[0] == CLOSE
            if closing:
                self.queue.put_nowait((CLOSE, None))
            return RESYNC, self.feed.snapshot()
        return event, data

    def close(self, reason: str = "") -> None:
        self.offer((CLOSE, reason or None))


class LiveFeed:
    """In-process publish/subscribe of live calls; every method runs on the event loop, except
    :meth:`close`, which a signal handler may call."""

    def __init__(self) -> None:
        self.calls: dict[str, LiveCall] = {}  # this box's
        self.remote: dict[str, LiveCall] = {}  # the other boxes' (a cluster)
        self.box = ""  # this box's name, set in a cluster: calls are tagged with it
        self.listener: Callable[[str, dict[str, Any]], None] | None = None  # local events
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- publishing (the call recorder) ------------------------------------------------------

    def opened(self, call_sid: str, mode: str) -> None:
        call = self.calls[call_sid] = LiveCall(call_sid, mode, time.time(), box=self.box)
        self._local("call", call.to_json())

    def state(self, call_sid: str, state: CallState) -> None:
        call = self.calls.get(call_sid)
        if call is not None and call.state != state.value:
            call.state = state.value
            self._local("state", {"call_sid": call_sid, "state": state.value})

    def line(self, call_sid: str, role: str, text: str) -> None:
        """A caller utterance (``user``) or an agent sentence as spoken (``assistant``)."""
        call = self.calls.get(call_sid)
        if call is not None and text:
            line = {"role": role, "text": text}
            call.lines.append(line)
            call.said += 1
            self._local("line", {"call_sid": call_sid, **line})

    def closed(self, call_sid: str) -> None:
        if self.calls.pop(call_sid, None) is not None:
            self._local("ended", {"call_sid": call_sid})

    def _local(self, event: str, data: dict[str, Any]) -> None:
        self._publish(event, data)
        if self.listener is not None:
            self.listener(event, data)

    def _publish(self, event: str, data: dict[str, Any]) -> None:
        for subscriber in self._subscribers:
            subscriber.offer((event, data))

    # --- the other boxes' calls (web.cluster_live) ---------------------------------------------

    def remote_call(self, call: LiveCall) -> None:
        """A call opened on another box; one known already (its hash was read first) stays."""
        if call.call_sid not in self.calls and call.call_sid not in self.remote:
            self.remote[call.call_sid] = call
            self._publish("call", call.to_json())

    def remote_state(self, call_sid: str, state: str) -> None:
        call = self.remote.get(call_sid)
        if call is not None and call.state != state:
            call.state = state
            self._publish("state", {"call_sid": call_sid, "state": state})

    def remote_line(self, call_sid: str, role: str, text: str, said: int) -> None:
        """Line number ``said`` of a remote call; one its snapshot already had is skipped."""
        call = self.remote.get(call_sid)
        if call is not None and said > call.said:
            call.said = said
            call.lines.append({"role": role, "text": text})
            self._publish("line", {"call_sid": call_sid, "role": role, "text": text})

    def remote_ended(self, call_sid: str) -> None:
        if self.remote.pop(call_sid, None) is not None:
            self._publish("ended", {"call_sid": call_sid})

    def remote_box(self, box: str, calls: list[LiveCall] | None) -> None:
        """Box ``box``'s calls are now exactly ``calls`` (None: the box is gone): calls it no
        longer has end, the others are replaced, and every watcher gets a fresh snapshot."""
        for call_sid in [sid for sid, c in self.remote.items() if c.box == box]:
            if calls is None:
                self.remote_ended(call_sid)
            else:
                del self.remote[call_sid]
        if calls is not None:
            self.remote.update((c.call_sid, c) for c in calls if c.call_sid not in self.calls)
            for subscriber in self._subscribers:
                subscriber.offer((RESYNC, None))

    def remote_boxes(self) -> set[str]:
        return {call.box for call in self.remote.values()}

    # --- watching ------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """This box's calls, then the other boxes' (a cluster)."""
        return [call.to_json() for calls in (self.calls, self.remote) for call in calls.values()]

    def subscribe(self) -> Subscription:
        """A new watcher; its first event is a snapshot. FeedClosed once draining."""
        if self._closed:
            raise FeedClosed("the server is shutting down")
        self._loop = asyncio.get_running_loop()
        subscription = Subscription(self)
        subscription.offer((RESYNC, None))
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def shut(self) -> bool:
        """No new watchers: the server is draining or stopping."""
        return self._closed

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscription and refuse new ones (drain, shutdown). Safe from a signal
        handler: the work itself is scheduled on the loop."""
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for subscriber in self._subscribers:
            subscriber.close()
