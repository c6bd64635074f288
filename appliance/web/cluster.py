"""Several boxes behind one phone number: call admission shared through Redis.

Each box keeps a hash ``<cluster>:box:<id>`` (its public URL, capacity, draining flag) alive with
a heartbeat; the key's TTL drops a box that stops beating (crash, power cut) from the pool within
``cluster_box_ttl_s``. Its calls are members of ``<cluster>:slots:<id>``, scored by when the
claim expires: a call reserved by a webhook holds its slot for ``socket_ticket_s`` until its
stream starts, a live call is renewed by every heartbeat, and an ended call is removed at once.
A reservation is one Lua script (check alive, not draining, count, add), so two webhooks on two
boxes can never both take a box's last slot. Redis's clock scores every claim, not the boxes'.

The webhook that received a call reserves on its own box first, then on the box with most room,
and answers with *that* box's stream URL; with every box full, the caller hears the busy message.
The call's one-use socket ticket is minted by that webhook and kept, in the same script, at
``<cluster>:ticket:<id>:<callSid>`` (a SHA-256 of it, expiring with the claim): the box the
stream goes to takes it from there when the socket starts (compare, then delete), so a ticket is
good on that box only, once, and no box reserves a local slot for a call it handed on.
A draining box (SIGTERM) takes no new calls: its heartbeat says so, and its own webhook sends
new calls to the other boxes while its live calls finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from appliance.box import box_name
from appliance.config import Settings
from appliance.web.runtime import CallSlots, Runtime, new_ticket

log = logging.getLogger(__name__)

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS: box hash, slots zset, ticket key. ARGV: call sid, claim ms, ticket digest.
# 1 if the call has (or now holds) a slot; its newest ticket is the one kept.
_RESERVE = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'draining') == '1' then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(redis.call('HGET', KEYS[1], 'capacity')) then
    return 0
  end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 2)
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', tonumber(ARGV[2]))
return 1
"""

# KEYS: ticket key. ARGV: digest of the ticket the socket brought. '' if good (now used up),
# else the refusal reason; a wrong guess leaves the real ticket in place.
_CLAIM = """
local kept = redis.call('GET', KEYS[1])
if not kept then return 'no-ticket' end
if kept ~= ARGV[1] then return 'bad-ticket' end
redis.call('DEL', KEYS[1])
return ''
"""

# KEYS: box hash, slots zset, boxes set, live-calls hash (web.cluster_live). ARGV: id, url,
# capacity, draining, ttl ms, pending ms, then the live calls' sids.
# Returns the calls this box holds.
_BEAT = _NOW + """
redis.call('HSET', KEYS[1], 'url', ARGV[2], 'capacity', ARGV[3], 'draining', ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
for i = 7, #ARGV do redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]) * 2)
return redis.call('ZCARD', KEYS[2])
"""


@dataclass(frozen=True, slots=True)
class BoxState:
    """One live box as the pool sees it."""

    box: str
    url: str
    capacity: int
    calls: int
    draining: bool

    @property
    def room(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.calls)


def ticket_digest(ticket: str) -> str:
    """What Redis keeps of a ticket: whoever reads the pool's keys cannot open a socket."""
    return hashlib.sha256(ticket.encode()).hexdigest()


class ClusterSlots(CallSlots):
    """This box's ``CallSlots``, telling the pool at once when a call starts or ends, and taking
    socket tickets from Redis (where whichever box answered the webhook put them)."""

    def __init__(self, limit: int, ticket_s: float, on_change: Callable[[], None],
                 on_release: Callable[[str], None],
                 claim_remote: Callable[[str, str], Awaitable[str]]) -> None:
        super().__init__(limit, ticket_s)
        self._on_change, self._on_release = on_change, on_release
        self._claim_remote = claim_remote

    async def claim(self, call_sid: str, token: str) -> str | None:
        if call_sid in self.pending:  # reserved here alone while Redis was unreachable
            return self.admit(call_sid, token)
        try:
            refusal = await self._claim_remote(call_sid, token)
        except RedisError as err:
            log.error("cluster: Redis unreachable (%s): call %s's ticket cannot be checked",
                      err, call_sid)
            return "pool-unreachable"
        return refusal or self.take(call_sid)

    def take(self, call_sid: str) -> str | None:
        refusal = super().take(call_sid)
        if refusal is None:
            self._on_change()
        return refusal

    def release(self, call_sid: str) -> None:
        super().release(call_sid)
        self._on_release(call_sid)


class Cluster:
    """This box's membership in the pool: heartbeat, reservations, the pool's view."""

    def __init__(self, settings: Settings, client: aioredis.Redis,
                 draining: Callable[[], bool]) -> None:
        """``draining``: whether this box takes no new calls now (stopping, or not loaded)."""
        self.settings = settings
        self.box = box_name(settings)
        self._redis = client
        self._draining = draining
        self._prefix = settings.cluster_name
        self._reserve = client.register_script(_RESERVE)
        self._claim = client.register_script(_CLAIM)
        self._beat = client.register_script(_BEAT)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self.slots = ClusterSlots(settings.max_calls, settings.socket_ticket_s, self._wake.set,
                                  self._released, self._take_ticket)

    @classmethod
    def from_settings(cls, settings: Settings, draining: Callable[[], bool]) -> Cluster:
        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2.0,
                                         socket_connect_timeout=2.0, decode_responses=True)
        return cls(settings, client, draining)

    def key(self, kind: str, box: str) -> str:
        return f"{self._prefix}:{kind}:{box}"

    @property
    def boxes_key(self) -> str:
        return f"{self._prefix}:boxes"

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    # --- membership ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the pool; with Redis unreachable, serve alone and keep trying (logged once)."""
        self._task = asyncio.create_task(self._run())
        log.info("joining cluster %r as %s (%d calls max)", self._prefix, self.box,
                 self.settings.max_calls)

    async def stop(self) -> None:
        """Leave the pool at once: no box routes calls here any more."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._redis.delete(self.key("box", self.box))
            await self._redis.srem(self.boxes_key, self.box)
        except RedisError as err:
            log.warning("cluster: could not leave cleanly (%s); the box times out instead", err)
        await self._redis.aclose()

    async def beat(self) -> int:
        """Publish this box (URL, capacity, draining) and renew its live calls' slots."""
        settings = self.settings
        ttl_ms = int(settings.cluster_box_ttl_s * 1000)
        return int(await self._beat(
            keys=[self.key("box", self.box), self.key("slots", self.box), self.boxes_key,
                  self.key("live", self.box)],
            args=[self.box, settings.public_base_url, settings.max_calls,
                  int(self._draining()), ttl_ms, int(settings.socket_ticket_s * 1000),
                  *sorted(self.slots.active)]))

    async def _run(self) -> None:
        failing, first = False, True
        while True:
            if not first:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.cluster_heartbeat_s)
                except TimeoutError:
                    pass
            first = False
            self._wake.clear()
            try:
                await self.beat()
            except RedisError as err:
                if not failing:
                    log.error("cluster: heartbeat to Redis failed (%s): this box drops out of "
                              "the pool until Redis answers", err)
                failing = True
            else:
                if failing:
                    log.info("cluster: Redis answers again: back in the pool")
                failing = False

    def changed(self) -> None:
        """Beat now (the box became ready or started draining), not at the next tick."""
        self._wake.set()

    def _released(self, call_sid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._free(call_sid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _free(self, call_sid: str) -> None:
        try:
            await self._redis.zrem(self.key("slots", self.box), call_sid)
        except RedisError as err:
            log.warning("cluster: could not free call %s's slot (%s); it expires", call_sid, err)

    # --- admission ----------------------------------------------------------------------------

    async def pool(self) -> list[BoxState]:
        """Every live box with its load, this one included; dead boxes are forgotten."""
        ids = sorted(str(m) for m in await self._redis.smembers(self.boxes_key))
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        async with self._redis.pipeline(transaction=False) as pipe:
            for box in ids:
                pipe.hgetall(self.key("box", box))
                pipe.zcount(self.key("slots", box), f"({now_ms}", "+inf")  # unexpired claims
            replies = await pipe.execute()
        states, dead = [], []
        for box, info, calls in zip(ids, replies[::2], replies[1::2], strict=True):
            if not info:
                dead.append(box)
                continue
            states.append(BoxState(box, info["url"], int(info["capacity"]), int(calls),
                                   info.get("draining") == "1"))
        if dead:
            await self._redis.srem(self.boxes_key, *dead)
        return states

    async def view(self) -> list[dict[str, Any]] | str:
        """The pool for /healthz; with Redis unreachable, why (this box still takes calls)."""
        try:
            return [dataclasses.asdict(box) for box in await self.pool()]
        except RedisError as err:
            return f"Redis unreachable: {err}"

    def _ticket_key(self, box: str, call_sid: str) -> str:
        return f"{self._prefix}:ticket:{box}:{call_sid}"

    async def reserve(self, call_sid: str, ticket: str, *, here: bool) -> BoxState | None:
        """A slot for ``call_sid``, and ``ticket`` its socket's ticket there: on this box if
        ``here`` and it has room, else on the live box with most room; None when every box is
        full or draining."""
        pool = await self.pool()
        mine = [b for b in pool if b.box == self.box and here]
        others = sorted((b for b in pool if b.box != self.box and b.room),
                        key=lambda b: (-b.room, b.box))
        claim_ms = int(self.settings.socket_ticket_s * 1000)
        for box in [*mine, *others]:
            keys = [self.key("box", box.box), self.key("slots", box.box),
                    self._ticket_key(box.box, call_sid)]
            if await self._reserve(keys=keys, args=[call_sid, claim_ms, ticket_digest(ticket)]):
                return box
        return None

    async def _take_ticket(self, call_sid: str, ticket: str) -> str:
        """Use up ``call_sid``'s ticket for this box: '' if ``ticket`` is it, else why not."""
        return str(await self._claim(keys=[self._ticket_key(self.box, call_sid)],
                                     args=[ticket_digest(ticket)]))


def cluster_from_settings(settings: Settings, draining: Callable[[], bool]) -> Cluster | None:
    """Redis admission when ``redis_url`` is set; None keeps the single box's own slots."""
    return Cluster.from_settings(settings, draining) if settings.redis_url else None


async def admit(runtime: Runtime, call_sid: str) -> tuple[str, str] | None:
    """The public base URL of the box that takes ``call_sid`` (this one if it can) and the
    socket ticket that box will accept; None when no box can.

    Without a cluster, or with Redis unreachable, only this box's own slots and tickets count: a
    Redis outage shrinks the pool to each box on its own, it never refuses calls a box has room
    for.
    """
    ready = runtime.engines is not None and not runtime.draining
    if runtime.cluster is not None:
        ticket = new_ticket()
        try:
            box = await runtime.cluster.reserve(call_sid, ticket, here=ready)
        except RedisError as err:
            log.error("cluster: Redis unreachable (%s): admitting on this box alone", err)
        else:
            if box is not None and box.box != runtime.cluster.box:
                log.info("call %s: this box %s; handed to %s", call_sid,
                         "is full" if ready else "takes no calls now", box.box)
            return (box.url, ticket) if box is not None else None
    own = runtime.calls.reserve(call_sid) if ready else None
    return (runtime.settings.public_base_url, own) if own is not None else None
