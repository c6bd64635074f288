"""Several boxes, one Live page: every box's calls in progress on every box's console.

Each box publishes its live feed's events (a call opened, a state, a transcript line, a call
ended; small JSON) on the pub/sub channel ``<cluster>:live``, and keeps its calls as they stand
in the hash ``<cluster>:live:<box>``, which the cluster heartbeat keeps alive as long as the box
hash (``web.cluster``): a box that dies takes its calls off every console within
``cluster_box_ttl_s``, as it leaves the admission pool. Every box subscribes, loads the other
boxes' hashes once subscribed (so a page opened any time starts from the whole cluster), and
merges their events into its own feed, each call tagged with its ``box``.

A call never waits for this: the feed hands each event to a bounded queue (``put_nowait``) and a
background task sends them, a batch per Redis round trip. A full queue, or Redis unreachable,
drops the events and marks this box's hash stale: once Redis answers, the hash is rewritten
whole and the other boxes reload it. With Redis down, each console shows its own box's calls
(logged once) until it answers again.

Hang up / Transfer on another box's call is forwarded on the same channel to the box holding it,
which acts as its own console would and publishes the outcome; chosen over calling that box's
HTTP API because the boxes then need no route to each other nor a shared API token, only the
Redis they already share, and over Twilio REST because that works without REST credentials and
also for ConversationRelay calls, whose hang-up goes through their own socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from redis.exceptions import RedisError

from appliance.core.live import LiveCall, LiveFeed
from appliance.web.cluster import Cluster
from appliance.web.runtime import ActionRefused, Runtime

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # events waiting for Redis before this box's hash is rewritten whole instead
COMMAND_TIMEOUT_S = 10.0  # how long an operator's hang-up waits for the holding box's answer


class ClusterLive:
    """This box's side of the cluster-wide live view: publisher, subscriber, command relay."""

    def __init__(self, cluster: Cluster, runtime: Runtime) -> None:
        self.box = cluster.box
        self.feed: LiveFeed = runtime.live
        self._runtime = runtime
        self._cluster = cluster
        self._redis = cluster.redis
        self._channel = f"{cluster.settings.cluster_name}:live"
        self._tick = min(cluster.settings.cluster_heartbeat_s, 1.0)
        self._ttl_ms = int(cluster.settings.cluster_box_ttl_s * 1000)
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)
        self._stale = True  # the hash must be written whole: at start, after lost events
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.feed.box = self.box
        self.feed.listener = self._local

    def _hash(self, box: str) -> str:
        return self._cluster.key("live", box)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(self._receive_loop())]

    async def stop(self) -> None:
        """Stop; the other consoles drop this box's calls at once."""
        self.feed.listener = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._hash(self.box))
                pipe.publish(self._channel, self._message("gone", {}))
                await pipe.execute()
        except RedisError as err:
            log.warning("cluster: could not withdraw this box's live calls (%s); they expire",
                        err)

    def _message(self, event: str, data: dict[str, Any]) -> str:
        return json.dumps({"box": self.box, "event": event, "data": data})

    # --- publishing this box's calls ---------------------------------------------------------

    def _local(self, event: str, data: dict[str, Any]) -> None:
        """The feed's listener: on the call's path, so it only queues (never blocks)."""
        if event in ("call", "line"):  # with the line count, so repeats can be told apart
            data = {**data, "said": self.feed.calls[data["call_sid"]].said}
        try:
            self._queue.put_nowait((event, data))
        except asyncio.QueueFull:
            self._stale = True

    def _stored(self, call: LiveCall) -> str:
        return json.dumps({**call.to_json(), "said": call.said})

    async def _send_loop(self) -> None:
        failing = False
        while True:
            try:
                batch = [await asyncio.wait_for(self._queue.get(), self._tick)]
            except TimeoutError:
                batch = []
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if not batch and not self._stale:
                continue
            try:
                await self._send(batch)
            except RedisError as err:
                self._stale = True
                if not failing:
                    log.error("cluster: cannot publish this box's live calls (%s): the other "
                              "boxes' consoles miss them until Redis answers", err)
                failing = True
            else:
                if failing:
                    log.info("cluster: publishing this box's live calls again")
                failing = False

    async def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """One transaction: the hash first, then the events, so a box that reads the hash after
        an event arrived never finds it older than that event."""
        key, calls = self._hash(self.box), self.feed.calls
        async with self._redis.pipeline(transaction=True) as pipe:
            if self._stale:  # everything so far is in the rewrite; later events queue up
                self._stale = False
                pipe.delete(key)
                if calls:
                    pipe.hset(key, mapping={sid: self._stored(c) for sid, c in calls.items()})
                pipe.publish(self._channel, self._message("box", {}))
            else:
                for sid in dict.fromkeys(data["call_sid"] for _, data in batch):
                    if sid in calls:
                        pipe.hset(key, sid, self._stored(calls[sid]))
                    else:
                        pipe.hdel(key, sid)
                for event, data in batch:
                    pipe.publish(self._channel, self._message(event, data))
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    # --- the other boxes' calls ----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    await self._load_all()
                    if failing:
                        log.info("cluster: the other boxes' live calls are back")
                    failing = False
                    check = loop.time() + self._tick
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=self._tick)
                        if message is not None:
                            await self._received(message["data"])
                        if loop.time() >= check:
                            await self._drop_dead()
                            check = loop.time() + self._tick
            except RedisError as err:
                if not failing:
                    log.error("cluster: the other boxes' live calls are unavailable (%s): this "
                              "console shows this box's calls until Redis answers", err)
                failing = True
                for box in self.feed.remote_boxes():
                    self.feed.remote_box(box, None)
                await asyncio.sleep(self._tick)

    async def _box_calls(self, box: str) -> list[LiveCall] | None:
        """``box``'s calls from its hash; None if the box is gone from the pool."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._cluster.key("box", box))
            pipe.hgetall(self._hash(box))
            alive, stored = await pipe.execute()
        if not alive:
            return None
        calls = []
        for sid, text in stored.items():
            try:
                calls.append(LiveCall.from_json(json.loads(text)))
            except (ValueError, KeyError, TypeError) as err:
                log.warning("cluster: box %s's live call %s is unreadable (%s)", box, sid, err)
        return calls

    async def _load_all(self) -> None:
        boxes = {str(b) for b in await self._redis.smembers(self._cluster.boxes_key)}
        for box in sorted((boxes | self.feed.remote_boxes()) - {self.box}):
            self.feed.remote_box(box, await self._box_calls(box))

    async def _drop_dead(self) -> None:
        """Calls of boxes whose heartbeat stopped (crashed, cut off) leave the view."""
        boxes = sorted(self.feed.remote_boxes())
        if not boxes:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for box in boxes:
                pipe.exists(self._cluster.key("box", box))
            alive = await pipe.execute()
        for box, up in zip(boxes, alive, strict=True):
            if not up:
                log.info("cluster: box %s stopped beating: its live calls leave the view", box)
                self.feed.remote_box(box, None)

    async def _received(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            box, event, data = str(message["box"]), str(message["event"]), message["data"]
            if box == self.box:
                return
            await self._apply(box, event, data)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("cluster: unreadable live message ignored (%s)", err)

    async def _apply(self, box: str, event: str, data: dict[str, Any]) -> None:
        feed = self.feed
        if event == "call":
            feed.remote_call(LiveCall.from_json(data))
        elif event == "state":
            feed.remote_state(str(data["call_sid"]), str(data["state"]))
        elif event == "line":
            feed.remote_line(str(data["call_sid"]), str(data["role"]), str(data["text"]),
                             int(data["said"]))
        elif event == "ended":
            feed.remote_ended(str(data["call_sid"]))
        elif event == "box":
            feed.remote_box(box, await self._box_calls(box))
        elif event == "gone":
            feed.remote_box(box, None)
        elif event == "command" and data["to"] == self.box:
            self._spawn(self._command(box, data))
        elif event == "reply" and data["to"] == self.box:
            future = self._pending.get(str(data["id"]))
            if future is not None and not future.done():
                future.set_result(data)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- operator actions across boxes --------------------------------------------------------

    def holder(self, call_sid: str) -> str | None:
        """The other box holding live call ``call_sid``; None if no other box does."""
        call = self.feed.remote.get(call_sid)
        return call.box if call is not None else None

    async def act(self, call_sid: str, action: str) -> None:
        """Hang up or transfer another box's call, done by that box. LookupError: no such
        call there (any more); ActionRefused: it could not, Redis is down, or no answer."""
        box = self.holder(call_sid)
        if box is None:
            raise LookupError(f"no live call {call_sid}")
        request = uuid.uuid4().hex
        future = self._pending[request] = asyncio.get_running_loop().create_future()
        try:
            await self._redis.publish(self._channel, self._message("command", {
                "to": box, "id": request, "call_sid": call_sid, "action": action}))
            reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        except RedisError as err:
            raise ActionRefused(f"{action} failed: Redis unreachable ({err})") from err
        except TimeoutError as err:
            raise ActionRefused(f"{action} failed: box {box} holding the call did not "
                                "answer") from err
        finally:
            del self._pending[request]
        if reply.get("missing"):
            raise LookupError(f"no live call {call_sid}")
        if reply.get("error"):
            raise ActionRefused(str(reply["error"]))

    async def _command(self, sender: str, data: dict[str, Any]) -> None:
        call_sid, action = str(data["call_sid"]), str(data["action"])
        reply: dict[str, Any] = {"to": sender, "id": str(data["id"])}
        if action not in ("hangup", "transfer"):
            reply["error"] = f"unknown action {action[:20]!r}"
        else:
            log.info("call %s: %s asked for by box %s's console", call_sid, action, sender)
            try:
                await self._runtime.act(call_sid, action)
            except LookupError:
                reply["missing"] = True
            except ActionRefused as err:
                reply["error"] = str(err)
        try:
            await self._redis.publish(self._channel, self._message("reply", reply))
        except RedisError as err:
            log.warning("cluster: could not answer box %s's %s (%s)", sender, action, err)
