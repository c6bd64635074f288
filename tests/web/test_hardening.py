"""Issue 11 through the real server on loopback: what a misbehaving client, a leaked URL or the
network sends is refused, and the good call beside it goes on."""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from appliance.caller.relay_sim import RelaySocket
from appliance.caller.twilio_wire import RelayTarget, parse_twiml
from appliance.config import Settings
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from appliance.web.refusals import BURST
from tests.conftest import api_auth, make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.twilio_client import SILENCE, greeted_call, place_call, sign, tone


def relay_target(body: str) -> RelayTarget:
    target = parse_twiml(body)
    assert isinstance(target, RelayTarget), target
    return target


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
        target = relay_target(body)
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


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> str:
    """Send a request by hand (so the body can be announced and never sent); the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


# --- item 5: call data needs a credential, never an address ----------------------------------

def test_call_data_needs_the_api_token_whatever_address_is_claimed(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    forged = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}
    app = create_app(settings, FakeSet().load)
    app.state.runtime.refusals.clock = lambda: 0.0  # time stands still: no budget refills
    with caplog.at_level(logging.WARNING), running_server(app, settings) as base:
        call_sid, _ = asyncio.run(place_call(base, settings))
        for path in (f"/api/calls/{call_sid}", "/api/metrics"):
            anonymous = httpx.get(base + path, headers=forged)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert "APPLIANCE_API_TOKEN" in anonymous.json()["detail"]
            wrong = httpx.get(base + path, headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401
            assert httpx.get(base + path, headers=api_auth(base)).status_code == 200
        for _ in range(60):
            httpx.get(base + "/api/metrics")
        assert httpx.get(base + "/schema").status_code == 404  # no OpenAPI document
        assert httpx.get(base + "/schema/openapi.json").status_code == 404
    refusals = [r for r in caplog.records if "API token" in r.getMessage()]
    assert len(refusals) == BURST  # 64 refusals: the burst is logged, the rest counted


def test_a_configured_api_token_replaces_the_local_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_token="operator-token-0123456789")
    with serve(settings) as base:
        good = {"Authorization": "Bearer operator-token-0123456789"}
        assert httpx.get(base + "/api/metrics", headers=good).status_code == 200
        assert not (settings.data_path / "local-api-token").exists()


def test_hosts_outside_the_public_url_are_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_base_url="https://phone.example.com")
    signature = sign(settings, "wss://phone.example.com/twilio/media", {})

    def upgrade(host: str) -> str:
        return raw_request(settings.port, (
            f"GET /twilio/media HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: {signature}"))

    with serve(settings) as base:
        for host in ("phone.example.com", "PHONE.example.com:443", "localhost:9999",
                     "127.0.0.1", "[::1]:8080"):
            assert httpx.get(base + "/healthz", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "phone.example.com.evil.example", "10.0.0.1", ""):
            assert httpx.get(base + "/healthz", headers={"Host": host}).status_code == 400, host
        assert upgrade("phone.example.com") == "HTTP/1.1 101 Switching Protocols"
        assert upgrade("evil.example") == "HTTP/1.1 403 Forbidden"


# --- item 6: webhooks check before they parse ------------------------------------------------

def test_a_webhook_without_a_signature_is_refused_unread(settings: Settings) -> None:
    head = ("POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 50000000")
    with serve(settings):
        # 50 MB announced, none sent: the answer comes at once, so nothing waited for the body.
        assert raw_request(settings.port, head) == "HTTP/1.1 403 Forbidden"


def test_webhook_bodies_are_capped_and_must_be_forms(settings: Settings) -> None:
    url = settings.public_base_url + "/twilio/voice"
    big = {"CallSid": "CA" + uuid.uuid4().hex, "Junk": "x" * 70_000}
    with serve(settings) as base:
        resp = httpx.post(base + "/twilio/voice", data=big,
                          headers={"X-Twilio-Signature": sign(settings, url, big)})
        assert resp.status_code == 413
        resp = httpx.post(base + "/twilio/voice", json={"CallSid": "CA1"},
                          headers={"X-Twilio-Signature": "x"})
        assert resp.status_code == 415
        _, twiml = asyncio.run(place_call(base, settings))  # a real one still works
        assert "<Stream" in twiml


# --- item 10: a callSid cannot forge log lines -----------------------------------------------

@pytest.mark.parametrize("call_sid", [
    "CA1", "CA" + "0" * 31 + "\n2026 INFO forged", "CA" + "g" * 32, "x" * 10_000,
])
def test_a_signed_webhook_with_a_malformed_call_sid_is_refused(
        settings: Settings, call_sid: str, caplog: pytest.LogCaptureFixture) -> None:
    form = {"CallSid": call_sid, "From": "+15550001111"}
    with caplog.at_level(logging.INFO), serve(settings) as base:
        for path in ("/twilio/voice", "/twilio/status", "/twilio/relay/action"):
            url = settings.public_base_url + path
            resp = httpx.post(base + path, data=form,
                              headers={"X-Twilio-Signature": sign(settings, url, form)})
            assert resp.status_code == 400, path
    assert not any("\n" in r.getMessage() for r in caplog.records)
    assert all(len(r.getMessage()) < 400 for r in caplog.records)


# --- item 9: private by default on disk ------------------------------------------------------

def test_call_data_and_tokens_are_private_on_disk(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "calls.db").touch(mode=0o644)  # left readable by an older version: tightened
    settings = make_settings(tmp_path, twilio_auth_token="")  # local signing token, too

    async def call(base: str) -> None:
        call_sid, stream = await greeted_call(base, settings)
        await stream.stop()
        await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings) as base:
        asyncio.run(call(base))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {"calls.db", "calls.db-wal", "calls.db-shm", "local-api-token",
            "local-twilio-auth-token"} <= set(modes)
    assert all(mode == 0o600 for mode in modes.values()), modes


# --- item 10: the caller's words stay out of the journal in relay mode -----------------------

def test_relay_caller_words_are_not_logged_at_info(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay")
    words = "My account number is 4417 and my name is Zebulon Quartermaine"

    async def call(base: str) -> None:
        call_sid, body = await place_call(base, settings)
        target = relay_target(body)
        socket = await RelaySocket.open(base, target.url, settings.twilio_auth_token)
        await socket.send(tr.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                                   custom_parameters=target.parameters))
        await socket.send(tr.Prompt(voice_prompt=words))
        while not getattr(await socket.next(10), "last", True):
            pass
        await socket.send(tr.Prompt(voice_prompt=words + " again"))
        while not getattr(await socket.next(10), "last", True):
            pass
        await socket.send(tr.Prompt(voice_prompt="Goodbye."))
        while not isinstance(await socket.next(10), tr.End):
            pass
        await socket.close()
        await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with caplog.at_level(logging.INFO), serve(settings) as base:
        asyncio.run(call(base))
    assert caplog.records
    assert not [r.getMessage() for r in caplog.records
                if r.levelno >= logging.INFO and "Zebulon" in r.getMessage()]
