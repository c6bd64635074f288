"""Issue 11 through the real server on loopback: what a misbehaving client, a leaked URL or the
network sends is refused, and the good call beside it goes on."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from appliance.caller.relay_sim import RelaySocket, parse_relay_twiml
from appliance.config import Settings
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from tests.conftest import make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.twilio_client import SILENCE, greeted_call, place_call, sign, tone

NESTED = '{"event":"media","x":' + "[" * 5000 + "]" * 5000 + "}"


def serve(settings: Settings, fakes: FakeSet | None = None):
    return running_server(create_app(settings, (fakes or FakeSet()).load), settings)


def test_deeply_nested_json_is_refused_and_the_call_goes_on(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    async def call(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        for _ in range(3):
            await stream.ws.send(NESTED)
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with caplog.at_level(logging.WARNING), serve(settings) as base:
        rec = asyncio.run(call(base))
    assert "JSON nested too deeply" in caplog.text
    assert rec["call"]["status"] == "completed" and rec["call"]["end_reason"] == "stop received"
    assert ("user", "What time do you open tomorrow?") in [(t["role"], t["text"])
                                                            for t in rec["turns"]]


def test_deeply_nested_json_on_the_relay_socket_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay")

    async def call(base: str) -> str:
        call_sid, body = await place_call(base, settings)
        target = parse_relay_twiml(body)
        socket = await RelaySocket.open(base, target.url, settings.twilio_auth_token)
        await socket.send(tr.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                                   custom_parameters=target.parameters))
        await socket.ws.send('{"type":"info","name":"x","value":' + "[" * 5000 + "]" * 5000
                             + "}")
        await socket.send(tr.Prompt(voice_prompt="What time do you open tomorrow?"))
        reply, last = "", False
        while not last:
            message = await socket.next(10)
            assert isinstance(message, tr.Text), message
            reply, last = reply + message.token, message.last
        await socket.close()
        return reply

    with serve(settings) as base:
        assert asyncio.run(call(base)).strip() == "We open at nine. See you then."


@pytest.mark.parametrize("path", ["/twilio/media", "/twilio/relay"])
def test_a_query_added_to_a_signed_socket_url_is_refused(settings: Settings, path: str) -> None:
    """Twilio signs the URL as requested: the bare URL's signature does not cover a query."""
    public = settings.public_base_url.replace("http", "ws", 1) + path
    local = f"ws://127.0.0.1:{settings.port}{path}"

    async def attempt(url: str, signed_over: str) -> None:
        headers = {"X-Twilio-Signature": sign(settings, signed_over, {})}
        async with connect(url, additional_headers=headers) as ws:
            await ws.close()

    with serve(settings):
        asyncio.run(attempt(local, public))  # the bare URL, signed: accepted
        asyncio.run(attempt(local + "?tenant=other", public + "?tenant=other"))  # signed too
        with pytest.raises(InvalidStatus):
            asyncio.run(attempt(local + "?tenant=other", public))
