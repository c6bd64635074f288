"""The Live page's Server-Sent Events through a real server with fake engines: a Media Streams
call and a ConversationRelay call seen as they happen, a watcher that never reads, logout and
drain ending the stream."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.bench.watchers import ConsoleWatchers
from appliance.caller.relay_sim import RelaySocket
from appliance.caller.twilio_wire import RelayTarget, parse_twiml
from appliance.config import Settings
from appliance.core import relay_session
from appliance.core.live import LiveFeed
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from tests.conftest import make_settings, running_server
from tests.console.helpers import ADMIN, console_server, login, seed_accounts
from tests.console.test_console_api import make_token
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, place_call, tone

STREAM = "/api/v1/live/stream"


class Watcher:
    """An SSE client: collects ``(event, data)`` pairs as they arrive."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: list[tuple[str, Any]] = []
        self.status = 0
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", STREAM, timeout=30) as response:
                self.status = response.status_code
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event:
                        self.events.append((event, json.loads(line.removeprefix("data: "))))
        finally:
            self.ended.set()

    def of(self, kind: str) -> list[Any]:
        return [data for event, data in self.events if event == kind]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def ended(watcher: Watcher, call_sid: str) -> Callable[[], bool]:
    return lambda: {"call_sid": call_sid} in watcher.of("ended")


def bearer(base: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"})


def test_a_media_call_is_pushed_as_it_happens(settings: Settings) -> None:
    with console_server(settings) as base:
        token = make_token(settings, "viewer")

        async def run() -> None:
            async with bearer(base, token) as client:
                watcher = Watcher(client)
                await watcher.wait_for(lambda: watcher.of("snapshot"))
                assert watcher.of("snapshot")[0] == []
                call_sid, stream = await greeted_call(base, settings)
                await watcher.wait_for(lambda: watcher.of("call"))
                call = watcher.of("call")[0]
                assert (call["call_sid"], call["from_number"]) == (call_sid, "+15550001111")
                assert call["mode"] == "media-streams"
                await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
                await watcher.wait_for(lambda: any(
                    line["text"] == "See you then." for line in watcher.of("line")))
                lines = [(d["role"], d["text"]) for d in watcher.of("line")]
                assert lines[0][0] == "assistant" and lines[0][1].startswith("Thanks for calling")
                asked = lines.index(("user", "What time do you open tomorrow?"))
                assert lines[asked + 1:] == [("assistant", "We open at nine."),
                                             ("assistant", "See you then.")]
                states = [d["state"] for d in watcher.of("state")]
                assert "thinking" in states and "speaking" in states[states.index("thinking"):]
                await stream.ack_marks()
                await stream.stop()
                await watcher.wait_for(lambda: watcher.of("ended"))
                assert watcher.of("ended") == [{"call_sid": call_sid}]
                # the JSON list the page used to poll reads the same feed
                assert (await client.get("/api/v1/live")).json() == []
                assert "appliance_live_watchers 1.0" in (await client.get("/metrics")).text
                await watcher.close()  # a browser going away unsubscribes
                async with asyncio.timeout(10):
                    while "appliance_live_watchers 0.0" not in (
                            await client.get("/metrics")).text:
                        await asyncio.sleep(0.05)

        asyncio.run(run())


def test_a_relay_call_is_visible_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_session, "SPOKEN_WORDS_PER_S", 100.0)
    settings = make_settings(tmp_path, mode="conversation-relay")
    seed_accounts(settings).db.conn.close()
    token = make_token(settings, "admin")
    with running_server(create_app(settings, FakeSet().load), settings) as base:

        async def run() -> None:
            async with bearer(base, token) as client:
                watcher = Watcher(client)
                await watcher.wait_for(lambda: watcher.of("snapshot"))
                call_sid, body = await place_call(base, settings)
                target = parse_twiml(body)
                assert isinstance(target, RelayTarget)
                relay = await RelaySocket.open(base, target.url, settings.twilio_auth_token)
                await relay.send(tr.Setup(
                    session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                    account_sid=settings.twilio_account_sid, from_="+15550001111",
                    to="+15550002222", direction="inbound",
                    custom_parameters=target.parameters))
                await watcher.wait_for(lambda: watcher.of("call"))
                assert watcher.of("call")[0]["mode"] == "conversation-relay"
                await relay.send(tr.Prompt(voice_prompt="When do you open?", last=True))
                await watcher.wait_for(lambda: any(
                    line["text"] == "See you then." for line in watcher.of("line")))
                lines = [(d["role"], d["text"]) for d in watcher.of("line")]
                assert lines[1:] == [("user", "When do you open?"),
                                     ("assistant", "We open at nine."),
                                     ("assistant", "See you then.")]
                await watcher.wait_for(lambda: [d["state"] for d in watcher.of("state")][-1:]
                                       == ["listening"])
                states = [d["state"] for d in watcher.of("state")]
                assert states[states.index("thinking"):] == ["thinking", "speaking", "listening"]
                live = (await client.get("/api/v1/live")).json()
                assert [c["call_sid"] for c in live] == [call_sid]
                # the operator's hang-up hands a relay call back to Twilio with an `end`
                assert (await client.post(f"/api/v1/live/{call_sid}/hangup")).status_code == 200
                ended = await relay.next(10)
                while isinstance(ended, tr.Text):  # the reply's tokens went out before it
                    ended = await relay.next(10)
                assert isinstance(ended, tr.End) and "end_call" in ended.handoff_data
                await relay.close()
                await watcher.wait_for(lambda: watcher.of("ended"))
                await watcher.close()

        asyncio.run(run())


def test_a_watcher_that_never_reads_does_not_hold_up_a_call(settings: Settings) -> None:
    with console_server(settings) as base:
        token = make_token(settings, "viewer")
        url = httpx.URL(base)
        stalled = socket.create_connection((url.host, url.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        stalled.sendall(f"GET {STREAM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                        "\r\n\r\n".encode())
        try:
            async def run() -> None:
                async with bearer(base, token) as client:
                    watcher = Watcher(client)
                    await watcher.wait_for(lambda: watcher.of("snapshot"))
                    for _ in range(3):
                        call_sid, stream = await greeted_call(base, settings)
                        await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
                        await stream.wait_for(lambda s=stream: len(s.events("mark")) >= 3)
                        await stream.ack_marks()
                        await stream.stop()
                        await watcher.wait_for(ended(watcher, call_sid))
                    await watcher.close()

            asyncio.run(run())
        finally:
            stalled.close()


def test_logout_ends_the_stream_and_drain_refuses_new_ones(settings: Settings) -> None:
    app = create_app(settings, FakeSet().load)
    seed_accounts(settings).db.conn.close()
    with running_server(app, settings) as base:
        browser, csrf = login(base, ADMIN)

        async def run() -> None:
            async with httpx.AsyncClient(base_url=base, cookies=browser.cookies) as client:
                watcher = Watcher(client)
                await watcher.wait_for(lambda: watcher.of("snapshot"))
                await asyncio.to_thread(browser.post, "/console/logout",
                                        headers={"X-CSRF-Token": csrf})
                await watcher.wait_for(watcher.ended.is_set)
                assert watcher.of("bye") == [{"reason": "logged out"}]
            async with bearer(base, make_token(settings, "viewer")) as client:
                watcher = Watcher(client)
                await watcher.wait_for(lambda: watcher.of("snapshot"))
                app.state.runtime.live.close()  # what a SIGTERM does
                await watcher.wait_for(watcher.ended.is_set)
                assert watcher.of("bye") == [{"reason": "the server is shutting down"}]
                assert (await client.get(STREAM)).status_code == 503

        asyncio.run(run())


def test_a_slow_subscriber_is_resynchronised_never_waited_for() -> None:
    async def run() -> None:
        feed = LiveFeed()
        slow = feed.subscribe()
        feed.opened("CA1", "media-streams")
        for n in range(1000):  # never awaits: a full queue is emptied, not waited on
            feed.line("CA1", "user", f"line {n}")
        assert slow.resyncs >= 1 and slow.queue.qsize() < 256
        assert (got := await slow.next(1)) is not None
        event, data = got
        assert event == "snapshot"
        assert data[0]["turns"][-1] == {"role": "user", "text": "line 999"}
        assert slow.queue.empty()
        feed.closed("CA1")
        assert await slow.next(1) == ("ended", {"call_sid": "CA1"})
        assert await slow.next(0.01) is None

    asyncio.run(run())


def test_the_bench_viewers_watch_a_call_and_reload_the_pages(settings: Settings) -> None:
    with console_server(settings) as base:
        token = make_token(settings, "viewer")

        async def run() -> dict[str, Any]:
            viewers = ConsoleWatchers(base, {"Authorization": f"Bearer {token}"}, 2,
                                      refresh_s=0.2)
            watching = asyncio.create_task(viewers.run())
            await asyncio.sleep(0.5)
            call_sid, stream = await greeted_call(base, settings)
            await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
            await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
            await stream.ack_marks()
            await stream.stop()
            for _ in range(200):
                if viewers.events["ended"] == 2:
                    break
                await asyncio.sleep(0.05)
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            return viewers.result()

        result = asyncio.run(run())
        assert result["errors"] == {}
        events = result["events"]
        assert (events["snapshot"], events["call"], events["ended"]) == (2, 2, 2)
        assert events["line"] >= 2 * 4  # greeting, question, two sentences, each viewer
        assert result["page_loads"] >= 4
