"""Two real servers on loopback behind one webhook, sharing Redis (admission) and PostgreSQL (the
call log), with scripted fake engines: calls split by capacity, a full pool says busy, every call
is visible from either box, a silent box drops out, a draining box takes no new calls."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed

from appliance.caller import twilio_wire as wire
from appliance.caller.report import CallFailed
from appliance.config import Settings, signing_token
from appliance.web.app import create_app
from appliance.web.runtime import Runtime
from tests.conftest import api_auth, make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import MediaStream, place_call, start_message

CAPACITY = 4


@pytest.fixture
def boxes(tmp_path: Path, redis_url: str, postgres_url: str, cluster_name: str
          ) -> Iterator[list[Box]]:
    """Two boxes: (base URL, settings, runtime) each."""
    with ExitStack() as stack:
        found = []
        for name in ("a", "b"):
            settings = make_settings(tmp_path / name, max_calls=CAPACITY, redis_url=redis_url,
                                     database_url=postgres_url, cluster_name=cluster_name,
                                     cluster_heartbeat_s=0.2, cluster_box_ttl_s=1.0)
            app = create_app(settings, FakeSet().load)
            found.append((stack.enter_context(running_server(app, settings)), settings,
                          app.state.runtime))
        # Ready boxes say so with their next heartbeat.
        wait_until(lambda: [b["draining"] for b in pool(found[0][0])] == [False, False])
        yield found


def stream_target(twiml: str) -> str | None:
    """The base URL of the box the TwiML sends the media stream to; None for a busy answer."""
    found = re.search(r'<Stream url="ws://([^/"]+)/twilio/media"', twiml)
    return f"http://{found.group(1)}" if found else None


Box = tuple[str, Settings, Runtime]  # base URL, settings, runtime


async def answered_call(webhook: str, settings: Settings,
                        boxes: list[Box]) -> tuple[str, MediaStream | None]:
    """Ring ``webhook``; open the stream on the box the TwiML names and hear its greeting."""
    call_sid, twiml = await place_call(webhook, settings)
    target = stream_target(twiml)
    if target is None:
        return call_sid, None
    box_settings = next(s for base, s, _ in boxes if base == target)
    stream = await MediaStream.open(target, box_settings, call_sid, twiml)
    await stream.wait_for(lambda: stream.events("media"))  # the greeting plays
    return target, stream


def pool(base: str) -> list[dict]:
    return httpx.get(f"{base}/healthz", timeout=5).json()["cluster"]


def test_calls_split_by_capacity_busy_when_full_visible_everywhere(boxes) -> None:
    (a, settings_a, _), (b, _, _) = boxes

    async def run() -> tuple[list[str], list[str], str]:
        calls = [await answered_call(a, settings_a, boxes) for _ in range(2 * CAPACITY)]
        _, busy = await place_call(a, settings_a)
        sids = [s.call_sid for _, s in calls if s is not None]
        for _, stream in calls:
            assert stream is not None
            await stream.stop()
        return [t for t, _ in calls], sids, busy

    targets, sids, busy = asyncio.run(run())
    assert targets == [a] * CAPACITY + [b] * CAPACITY  # its own box first, then the other
    assert "<Stream" not in busy and "<Say>" in busy
    for sid in sids:  # one call log: every call from either box
        for base in (a, b):
            record = httpx.get(f"{base}/api/calls/{sid}", headers=api_auth(base), timeout=5).json()
            assert record["call"]["call_sid"] == sid and record["turns"] is not None


def test_ended_calls_free_their_slots(boxes) -> None:
    (a, settings_a, _), _ = boxes

    async def run() -> list[str]:
        targets = []
        for _ in range(2 * CAPACITY + 2):  # more calls than slots, one after another
            target, stream = await answered_call(a, settings_a, boxes)
            assert stream is not None
            await stream.stop()
            await asyncio.sleep(0.1)  # the socket's close reaches the server
            targets.append(target)
        return targets

    assert set(asyncio.run(run())) == {a}


def test_a_silent_box_drops_out_and_a_draining_box_takes_no_calls(boxes) -> None:
    (a, settings_a, runtime_a), (b, settings_b, runtime_b) = boxes
    assert {box["box"] for box in pool(a)} == {runtime_a.cluster.box, runtime_b.cluster.box}

    runtime_a.draining = True  # what SIGTERM does: A sends new calls to B

    async def calls() -> tuple[str, str]:
        target, stream = await answered_call(a, settings_a, boxes)
        assert stream is not None
        await stream.stop()
        return target, (await place_call(b, settings_b))[1]

    target, twiml = asyncio.run(calls())
    assert target == b
    assert stream_target(twiml) == b  # B never sends one to the draining A

    runtime_b.cluster._task.cancel()  # B freezes: no more heartbeats (a crash, a cut cable)
    wait_until(lambda: [box["box"] for box in pool(a)] == [runtime_a.cluster.box])
    _, twiml = asyncio.run(place_call(a, settings_a))
    assert stream_target(twiml) is None  # A drains, B is gone: the caller hears busy


async def socket_ending(base: str, settings: Settings, call_sid: str,
                        parameters: dict[str, str]) -> str:
    """Open a signed media socket on ``base``, start ``call_sid`` with ``parameters``; the close
    reason once the server ends it."""
    url = base.replace("http", "ws", 1) + "/twilio/media"
    ws = await wire.open_socket(base, url, signing_token(settings), what="socket")
    await ws.send(json.dumps(start_message(settings, call_sid, "MZ" + uuid.uuid4().hex,
                                           parameters)))
    try:
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_reason or ""


def test_a_handed_off_call_opens_on_its_box_only_with_its_ticket_once(boxes) -> None:
    (a, settings_a, runtime_a), (b, settings_b, runtime_b) = boxes

    async def run() -> tuple[int, str, str, set[str], str, str]:
        for _ in range(CAPACITY):  # A's slots: calls answered, their streams not yet started
            _, twiml = await place_call(a, settings_a)
            assert stream_target(twiml) == a
        call_sid, twiml = await place_call(a, settings_a)
        assert stream_target(twiml) == b
        parameters = wire.parse_twiml(twiml).parameters
        held_on_a = runtime_a.calls.count()
        wrong_box = await socket_ending(a, settings_a, call_sid, parameters)
        guessed = await socket_ending(b, settings_b, call_sid, {**parameters, "ticket": "guess"})
        stream = await MediaStream.open(b, settings_b, call_sid, twiml)
        await stream.wait_for(lambda: stream.events("media"))  # the greeting plays
        live_on_b = set(runtime_b.calls.active)
        replayed = await socket_ending(b, settings_b, call_sid, parameters)
        await stream.stop()
        return held_on_a, wrong_box, guessed, live_on_b, replayed, call_sid

    held_on_a, wrong_box, guessed, live_on_b, replayed, call_sid = asyncio.run(run())
    assert held_on_a == 0  # the webhook's box kept no slot or ticket of its own for any of them
    assert wrong_box.startswith("refused: no-ticket")  # B's ticket is good on B only
    assert guessed.startswith("refused: bad-ticket")  # and a wrong guess did not burn it:
    assert live_on_b == {call_sid}  # the real one opened the call on B
    assert replayed.startswith("refused: no-ticket")  # once


def wait_until(predicate, timeout: float = 30.0) -> None:
    async def poll() -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.1)
    asyncio.run(poll())



def test_a_box_accepts_webhooks_signed_for_the_shared_number_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_base_url="https://calls.example.com")
    shared = msgspec.structs.replace(settings, public_base_url="https://calls.example.com")
    foreign = msgspec.structs.replace(settings, public_base_url="https://other.example.com")
    with running_server(create_app(settings, FakeSet().load), settings) as base:
        _, twiml = asyncio.run(place_call(base, shared))
        assert stream_target(twiml) == base  # the stream still goes to this box's own URL
        asyncio.run(place_call(base, settings))  # its own URL is still accepted
        with pytest.raises(CallFailed, match="HTTP 403"):
            asyncio.run(place_call(base, foreign))


def test_two_webhooks_never_take_the_same_last_slot(tmp_path: Path, redis_url: str,
                                                    cluster_name: str) -> None:
    from appliance.web.cluster import Cluster

    async def run() -> list[str | None]:
        clusters = []
        for name in ("x", "y"):
            settings = make_settings(tmp_path / name, max_calls=1, redis_url=redis_url,
                                     cluster_name=cluster_name)
            clusters.append(Cluster.from_settings(settings, lambda: False))
        for cluster in clusters:
            await cluster.beat()
        results = await asyncio.gather(*(clusters[i % 2].reserve(f"CA{i}", f"t{i}", here=True)
                                         for i in range(10)))
        for cluster in clusters:
            await cluster.stop()
        return [r.box if r else None for r in results]

    taken = [box for box in asyncio.run(run()) if box]
    assert len(taken) == len(set(taken)) == 2  # one call per box; every other caller: busy


def test_with_redis_gone_a_box_admits_calls_on_its_own(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from tests.conftest import free_port

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis = subprocess.Popen([server, "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    try:
        settings = make_settings(tmp_path, max_calls=1, redis_url=f"redis://127.0.0.1:{port}/0",
                                 cluster_heartbeat_s=0.2)
        wait_until(lambda: _pings(settings.redis_url))
        with running_server(create_app(settings, FakeSet().load), settings) as base:
            redis.kill()
            redis.wait()
            first, second = asyncio.run(place_call(base, settings)), asyncio.run(
                place_call(base, settings))
            health = httpx.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and "Redis unreachable" in health.json()["cluster"]
        assert stream_target(first[1]) == base  # this box's own slot
        assert stream_target(second[1]) is None  # and its own limit still holds
    finally:
        redis.kill()


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def test_a_box_starts_without_redis_and_serves_alone(tmp_path: Path) -> None:
    from tests.conftest import free_port

    settings = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with running_server(create_app(settings, FakeSet().load), settings) as base:
        _, twiml = asyncio.run(place_call(base, settings))
    assert stream_target(twiml) == base
