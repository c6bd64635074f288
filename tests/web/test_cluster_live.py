"""The Live page across boxes, through two real servers sharing the real Redis and PostgreSQL:
box A in this process, box B a process of its own (so it can be killed outright). B's calls
show on A's ``/api/v1/live`` and A's SSE stream with their transcript as it is spoken; A's
console hangs up B's call; a killed B's calls leave A's view once its heartbeat expires."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from appliance.config import Settings
from appliance.web.app import create_app
from appliance.web.runtime import Runtime
from tests.conftest import api_auth, make_settings, running_server
from tests.console.test_live_stream import Watcher
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, tone

ROOT = Path(__file__).resolve().parents[2]


def box_settings(tmp_path: Path, name: str, redis_url: str, postgres_url: str,
                 cluster_name: str) -> Settings:
    return make_settings(tmp_path / name, box_id=name, redis_url=redis_url,
                         database_url=postgres_url, cluster_name=cluster_name,
                         cluster_heartbeat_s=0.2, cluster_box_ttl_s=1.0)


@pytest.fixture
def box_b(tmp_path: Path, redis_url: str, postgres_url: str,
          cluster_name: str) -> Iterator[tuple[str, Settings, subprocess.Popen[bytes]]]:
    """Box B in its own process: base URL, settings, the process."""
    settings = box_settings(tmp_path, "b", redis_url, postgres_url, cluster_name)
    path = tmp_path / "b.json"
    path.write_bytes(msgspec.json.encode(settings))
    with open(tmp_path / "b.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.web.fake_box", str(path)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{settings.port}"
    try:
        wait_until(lambda: proc.poll() is not None or _ready(base), timeout=120)
        assert proc.poll() is None, (tmp_path / "b.log").read_text()
        yield base, settings, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    async def poll() -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.1)
    asyncio.run(poll())


def shown(watcher: Watcher, call_sid: str) -> bool:
    """The stream has shown ``call_sid`` opening (or in a fresh snapshot)."""
    return any(c["call_sid"] == call_sid for c in watcher.of("call")
               + [c for snapshot in watcher.of("snapshot") for c in snapshot])


def live_on(base: str) -> list[dict[str, Any]]:
    return httpx.get(f"{base}/api/v1/live", headers=api_auth(base), timeout=5).json()


def test_every_box_sees_every_call_hangs_it_up_and_forgets_a_dead_box(
        tmp_path: Path, redis_url: str, postgres_url: str, cluster_name: str,
        box_b: tuple[str, Settings, subprocess.Popen[bytes]]) -> None:
    b, settings_b, proc_b = box_b
    settings_a = box_settings(tmp_path, "a", redis_url, postgres_url, cluster_name)
    app = create_app(settings_a, FakeSet().load)
    runtime_a: Runtime = app.state.runtime
    with running_server(app, settings_a) as a:
        wait_until(lambda: {box["box"] for box in httpx.get(f"{a}/healthz").json()["cluster"]}
                   == {"a", "b"})

        async def run() -> None:
            async with httpx.AsyncClient(base_url=a, headers=api_auth(a)) as client:
                watcher = Watcher(client)
                await watcher.wait_for(lambda: watcher.of("snapshot"))
                # A call B holds, seen from A as it happens: opened, greeted, asked, answered.
                call_sid, stream = await greeted_call(b, settings_b)
                assert call_sid not in runtime_a.sessions
                await watcher.wait_for(lambda: shown(watcher, call_sid), timeout=30)
                await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
                await watcher.wait_for(lambda: any(
                    line["call_sid"] == call_sid and line["text"] == "See you then."
                    for line in watcher.of("line")), timeout=30)
                listed = (await client.get("/api/v1/live")).json()
                assert [(c["call_sid"], c["box"], c["from_number"]) for c in listed] == [
                    (call_sid, "b", "+15550001111")]
                spoken = [t["text"] for t in listed[0]["turns"]]
                asked = spoken.index("What time do you open tomorrow?")
                assert spoken[0].startswith("Thanks for calling")
                assert spoken[asked + 1:] == ["We open at nine.", "See you then."]
                await stream.ack_marks()

                # A's operator hangs up B's call: B does it (closing the media socket).
                hangup = await client.post(f"/api/v1/live/{call_sid}/hangup")
                assert hangup.status_code == 200, hangup.text
                async with asyncio.timeout(30):
                    while stream.ws.close_code is None:
                        await asyncio.sleep(0.05)
                stream._reader.cancel()
                await watcher.wait_for(lambda: {"call_sid": call_sid} in watcher.of("ended"),
                                       timeout=30)
                missing = await client.post(f"/api/v1/live/{call_sid}/hangup")
                assert missing.status_code == 404

                # Another call on B, then B dies without a word: A forgets it.
                doomed, doomed_stream = await greeted_call(b, settings_b)
                await watcher.wait_for(lambda: shown(watcher, doomed), timeout=30)
                proc_b.send_signal(signal.SIGKILL)
                await watcher.wait_for(lambda: {"call_sid": doomed} in watcher.of("ended"),
                                       timeout=30)
                doomed_stream._reader.cancel()
                await watcher.close()

        asyncio.run(run())
        assert live_on(a) == []
        actions = [r["action"] for r in httpx.get(f"{a}/api/v1/audit", headers=api_auth(a),
                                                  timeout=5).json()]
        assert actions[0] == "call.hangup"


class FakeSession:
    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self.done: list[str] = []

    async def hang_up(self) -> None:
        self.done.append("hangup")

    async def transfer(self, number: str) -> None:
        self.done.append(f"transfer {number}")


class Box:
    """A cluster member without a web server: its cluster, live view and runtime."""

    def __init__(self, tmp_path: Path, name: str, redis_url: str, cluster_name: str,
                 **overrides: Any) -> None:
        from appliance.web.cluster import Cluster
        from appliance.web.cluster_live import ClusterLive

        self.settings = make_settings(tmp_path / name, box_id=name, redis_url=redis_url,
                                      cluster_name=cluster_name, cluster_heartbeat_s=0.1,
                                      cluster_box_ttl_s=1.0, **overrides)
        self.runtime = Runtime.create(self.settings)
        self.cluster = Cluster.from_settings(self.settings, lambda: False)
        self.live = ClusterLive(self.cluster, self.runtime)
        self.feed = self.runtime.live

    async def __aenter__(self) -> Box:
        await self.cluster.start()
        await self.live.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.live.stop()
        await self.cluster.stop()


async def until(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def test_an_operator_action_runs_on_the_box_holding_the_call(
        tmp_path: Path, redis_url: str, cluster_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.web import cluster_live
    from appliance.web.runtime import ActionRefused

    monkeypatch.setattr(cluster_live, "COMMAND_TIMEOUT_S", 1.0)

    async def run() -> None:
        async with Box(tmp_path, "x", redis_url, cluster_name) as x, \
                Box(tmp_path, "y", redis_url, cluster_name, transfer_number="+15550009999") as y:
            session = FakeSession("CY1")
            y.runtime.sessions["CY1"] = session
            y.feed.opened("CY1", "media-streams")
            y.feed.line("CY1", "assistant", "Hello.")
            await until(lambda: x.live.holder("CY1") == "y")
            await x.live.act("CY1", "transfer")
            await x.live.act("CY1", "hangup")
            assert session.done == ["transfer +15550009999", "hangup"]
            del y.runtime.sessions["CY1"]  # ended on y before its view caught up
            with pytest.raises(LookupError):
                await x.live.act("CY1", "hangup")
            with pytest.raises(LookupError):
                await x.live.act("CZ9", "hangup")  # no box holds it
            for task in y.live._tasks:  # y stops listening: the request is not answered
                task.cancel()
            with pytest.raises(ActionRefused, match="box y holding the call did not answer"):
                await x.live.act("CY1", "hangup")

    asyncio.run(run())


def test_publishing_never_waits_for_redis_and_catches_up_once_it_answers(
        tmp_path: Path, cluster_name: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import shutil

    from tests.conftest import free_port

    caplog.set_level(logging.INFO, "appliance.web.cluster_live")
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def run() -> list[dict[str, Any]]:
        async with Box(tmp_path, "x", url, cluster_name) as x:
            x.feed.opened("CX1", "relay")  # Redis is down: the call goes on regardless
            for n in range(3000):  # more than the queue holds
                x.feed.line("CX1", "assistant", f"line {n}")
            await until(lambda: "cannot publish this box's live calls" in caplog.text)
            assert [c["call_sid"] for c in x.feed.snapshot()] == ["CX1"]
            redis = await asyncio.create_subprocess_exec(
                server, "--port", str(port), "--save", "", "--appendonly", "no",
                stdout=asyncio.subprocess.DEVNULL)
            try:
                async with Box(tmp_path, "y", url, cluster_name) as y:
                    await until(lambda: y.live.holder("CX1") == "x")
                    x.feed.line("CX1", "user", "Still there?")
                    await until(lambda: y.feed.remote["CX1"].said == 3001)
                    return y.feed.snapshot()
            finally:
                redis.kill()
                await redis.wait()

    seen = asyncio.run(run())
    assert seen[0]["turns"][-2:] == [{"role": "assistant", "text": "line 2999"},
                                     {"role": "user", "text": "Still there?"}]
    assert caplog.text.count("cannot publish this box's live calls") == 1
    assert "publishing this box's live calls again" in caplog.text
