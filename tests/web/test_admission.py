"""Who may open a call socket, and what a socket may cost: the real server on loopback, a
misbehaving socket client beside a good call whose transcript is checked."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from appliance.caller import twilio_wire as wire
from appliance.caller.report import CallFailed
from appliance.config import Settings, signing_token
from appliance.core.session import CallSession
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from tests.conftest import api_auth, make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, place_call, start_message, tone

QUESTION = "What time do you open tomorrow?"
ANSWER = "We open at nine. See you then."


def stream_sid() -> str:
    return "MZ" + uuid.uuid4().hex


def media_url(settings: Settings) -> str:
    return settings.public_base_url.replace("http", "ws", 1) + "/twilio/media"


async def raw_socket(base: str, settings: Settings, path: str = "/twilio/media",
                     token: str | None = None) -> ClientConnection:
    url = settings.public_base_url.replace("http", "ws", 1) + path
    return await wire.open_socket(base, url, token or signing_token(settings), what="socket")


async def closed(ws: ClientConnection, timeout: float = 10.0) -> str:
    """Wait until the server closes ``ws``; the close reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    return ws.close_reason or ""


async def start(base: str, settings: Settings, call_sid: str,
                parameters: dict[str, str]) -> ClientConnection:
    ws = await raw_socket(base, settings)
    await ws.send(json.dumps(start_message(settings, call_sid, stream_sid(), parameters)))
    return ws


def ticket_of(twiml: str) -> dict[str, str]:
    return wire.parse_twiml(twiml).parameters


async def metrics(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{base}/api/metrics", headers=api_auth(base))).json()


async def record(base: str, call_sid: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(headers=api_auth(base)) as client:
        while True:
            rec = (await client.get(f"{base}/api/calls/{call_sid}")).json()
            if rec.get("call", {}).get("ended") or asyncio.get_running_loop().time() > deadline:
                return rec
            await asyncio.sleep(0.05)


async def slots_free(base: str) -> dict[str, Any]:
    """The server's metrics once every slot is back (a hang guard, not a speed check)."""
    deadline = asyncio.get_running_loop().time() + 10
    while (body := await metrics(base))["slots_used"] and \
            asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return body


async def good_turn(base: str, settings: Settings) -> dict[str, Any]:
    """A whole good call: greeted, asks, hears the answer, hangs up; its record."""
    call_sid, good = await greeted_call(base, settings)
    await good.send_audio(tone(0.8) + SILENCE * 30)
    await good.wait_for(lambda: len(good.events("mark")) >= 2)
    await good.ack_marks()
    await good.stop()
    return await record(base, call_sid)


async def hung_up(reader: asyncio.Task[None]) -> None:
    await asyncio.wait_for(asyncio.gather(reader, return_exceptions=True), 10)


def answered(rec: dict[str, Any]) -> tuple[list[str], list[str]]:
    turns = rec["turns"]
    return ([t["text"] for t in turns if t["role"] == "user"],
            [t["text"] for t in turns if t["role"] == "assistant"][1:])


def serve(settings: Settings, fakes: FakeSet | None = None) -> Any:
    app = create_app(settings, (fakes or FakeSet()).load)
    return app, running_server(app, settings)


def test_a_socket_needs_its_calls_fresh_ticket_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, start_timeout_s=0.5)

    async def attacks(base: str) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        reasons: dict[str, str] = {}
        call_a, twiml_a = await place_call(base, settings)
        call_b, twiml_b = await place_call(base, settings)
        reasons["no ticket"] = await closed(await start(base, settings, call_a, {}))
        reasons["b's ticket"] = await closed(await start(base, settings, call_a,
                                                          ticket_of(twiml_b)))
        reasons["unknown call"] = await closed(await start(base, settings,
                                                            "CA" + uuid.uuid4().hex,
                                                            ticket_of(twiml_a)))
        reasons["bad sid"] = await closed(await start(base, settings, "CA1",
                                                       ticket_of(twiml_a)))
        reasons["silent"] = await closed(await raw_socket(base, settings))
        genuine = await start(base, settings, call_a, ticket_of(twiml_a))  # still good
        reasons["replayed"] = await closed(await start(base, settings, call_a,
                                                        ticket_of(twiml_a)))
        good = await good_turn(base, settings)  # beside all that, a call goes normally
        await genuine.close()
        return reasons, good, await slots_free(base)

    app, server = serve(settings)
    with server as base:
        reasons, good, body = asyncio.run(attacks(base))
    expected = {"no ticket": "refused: bad-ticket", "b's ticket": "refused: bad-ticket",
                "unknown call": "refused: no-ticket", "bad sid": "refused: bad-sid",
                "silent": "no start within 0.5 s", "replayed": "refused: no-ticket"}
    assert {kind: reason[:len(expected[kind])] for kind, reason in reasons.items()} == expected
    assert answered(good) == ([QUESTION], [ANSWER])
    assert body["refused_sockets"] == {"bad-ticket": 2, "no-ticket": 2, "bad-sid": 1,
                                       "no-start": 1}
    # call_b's reservation expires unused; nothing else holds a slot
    assert body["active_calls"] == 0 and body["slots_used"] <= 1


def test_slots_return_to_zero_after_every_refused_or_failed_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, max_calls=2, start_timeout_s=0.3, socket_ticket_s=1.0)
    runtime_holder: dict[str, Any] = {}

    async def failing_start(self: CallSession) -> None:
        raise RuntimeError("session could not start")

    async def refused_upgrade(base: str) -> bool:
        try:
            await (await raw_socket(base, settings)).close()
        except CallFailed:
            return True
        return False

    async def each_kind(base: str) -> dict[str, Any]:
        runtime = runtime_holder["runtime"]
        seen: dict[str, Any] = {}

        async def after(kind: str, result: object) -> None:
            body = await slots_free(base)
            seen[kind] = (result, body["slots_used"], body["active_calls"])

        try:
            await wire.open_socket(base, media_url(settings), "wrong-token", what="socket")
            await after("bad signature", False)
        except CallFailed:
            await after("bad signature", True)
        runtime.draining = True
        await after("draining", await refused_upgrade(base))
        runtime.draining = False
        engines, runtime.engines = runtime.engines, None
        await after("not ready", await refused_upgrade(base))
        runtime.engines = engines
        await after("no start", await closed(await raw_socket(base, settings)))
        call_sid, twiml = await place_call(base, settings)
        await after("bad ticket", await closed(await start(base, settings, call_sid,
                                                            {"ticket": "guess"})))
        await asyncio.sleep(settings.socket_ticket_s)  # its reservation lapses meanwhile
        await after("expired ticket", await closed(await start(base, settings, call_sid,
                                                                ticket_of(twiml))))
        call_sid, twiml = await place_call(base, settings)
        monkeypatch.setattr(CallSession, "start", failing_start)
        await after("session failed", await closed(await start(base, settings, call_sid,
                                                                ticket_of(twiml))))
        monkeypatch.undo()
        seen["good"] = answered(await good_turn(base, settings))
        await after("end", None)
        return seen

    app, server = serve(settings)
    runtime_holder["runtime"] = app.state.runtime
    with server as base:
        seen = asyncio.run(each_kind(base))
    assert seen.pop("good") == ([QUESTION], [ANSWER])
    for kind, (result, slots, active) in seen.items():
        assert (slots, active) == (0, 0), kind
        if kind in {"bad signature", "draining", "not ready"}:
            assert result is True, kind  # refused at the upgrade, before any slot
    assert seen["no start"][0] == "no start within 0.3 s"
    assert seen["bad ticket"][0].startswith("refused: bad-ticket")
    assert seen["expired ticket"][0].startswith("refused: no-ticket")
    assert seen["session failed"][0].startswith("error: RuntimeError")


def test_an_audio_flood_is_dropped_then_closed_and_the_good_call_is_unhurt(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    fakes = FakeSet()
    second = base64.b64encode(b"\x00" * 8000).decode()  # one loud second of audio per frame

    async def flood(base: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        call_sid, twiml = await place_call(base, settings)
        ws = await start(base, settings, call_sid, ticket_of(twiml))
        try:
            for _ in range(40):  # 40 s of audio at once: 150 s/s was possible before
                await ws.send(json.dumps({"event": "media", "media": {"payload": second}}))
        except ConnectionClosed:
            pass
        reason = await closed(ws)
        bad = await record(base, call_sid)
        good = await good_turn(base, settings)
        return reason, bad, good

    with caplog.at_level(logging.WARNING), running_server(
            create_app(settings, fakes.load), settings) as base:
        reason, bad, good = asyncio.run(flood(base))
    assert reason.startswith("refused: audio-flood")
    assert bad["call"]["status"] == "failed" and "audio-flood" in bad["call"]["end_reason"]
    assert caplog.text.count("audio flood") == 1  # one line for the episode
    assert answered(good) == ([QUESTION], [ANSWER])


def test_a_stream_that_goes_quiet_or_runs_too_long_is_ended(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, media_timeout_s=0.5, max_call_s=60)

    async def quiet(base: str, settings: Settings) -> dict[str, Any]:
        call_sid, stream = await greeted_call(base, settings)
        await hung_up(stream._reader)  # we send nothing: the server hangs up
        return await record(base, call_sid)

    app, server = serve(settings)
    with server as base:
        rec = asyncio.run(quiet(base, settings))
    assert rec["call"]["status"] == "failed"
    assert rec["call"]["end_reason"] == "no media for 0.5 s"

    settings = make_settings(tmp_path, max_call_s=0.5)

    async def talkative(base: str, settings: Settings) -> dict[str, Any]:
        call_sid, stream = await greeted_call(base, settings)
        sending = asyncio.create_task(stream.send_audio(SILENCE * 500, pace=0.02))
        await hung_up(stream._reader)
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        return await record(base, call_sid)

    app, server = serve(settings)
    with server as base:
        rec = asyncio.run(talkative(base, settings))
    assert rec["call"]["end_reason"] == "call longer than 0.5 s"


def test_a_relay_setup_needs_its_ticket(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay")

    async def attempt(base: str) -> tuple[str, dict[str, Any]]:
        call_sid, twiml = await place_call(base, settings)
        ws = await raw_socket(base, settings, "/twilio/relay")
        await ws.send(tr.encode(tr.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                                         custom_parameters={"callSid": call_sid})).decode())
        reason = await closed(ws)
        ws = await raw_socket(base, settings, "/twilio/relay")
        await ws.send(tr.encode(tr.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                                         custom_parameters=ticket_of(twiml))).decode())
        while not (await metrics(base))["active_calls"]:  # the genuine setup is admitted
            await asyncio.sleep(0.05)
        await ws.close()
        return reason, await slots_free(base)

    app, server = serve(settings)
    with server as base:
        reason, body = asyncio.run(attempt(base))
    assert reason.startswith("refused: bad-ticket")
    assert body["slots_used"] == 0 and body["refused_sockets"] == {"bad-ticket": 1}
