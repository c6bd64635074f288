"""Take a message on a real call: ConversationRelay through the real server, SQLite, a real
webhook receiver on loopback that fails once, a real SMTP server (aiosmtpd), and
``appliance messages list``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller

from appliance.config import Settings
from appliance.engines.fakes import FakeStt
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from tests.conftest import free_port, make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.test_relay_call import open_call, read_reply, said, serve
from tests.web.twilio_client import SILENCE, MediaStream, greeted_call, tone

ROOT = Path(__file__).resolve().parents[2]
SECRET = "webhook-secret-123"


class Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first POST and 200 after; keeps what it was sent."""

    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, self.headers.get("X-Appliance-Signature", "")))
        self.send_response(500 if len(Receiver.received) == 1 else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Inbox:
    def __init__(self) -> None:
        self.mails: list[str] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.mails.append(envelope.content.decode())  # type: ignore[attr-defined]
        return "250 OK"


def messages_listed(settings: Settings) -> list[dict]:
    """What ``appliance messages list --json`` shows for this box."""
    listed = subprocess.run(
        [sys.executable, "-m", "appliance", "messages", "list", "--json"], cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "APPLIANCE_DATA_DIR": settings.data_dir, "PATH": ""},
        capture_output=True, text=True, check=True)
    return list(json.loads(listed.stdout))


def test_a_message_is_taken_stored_signed_and_listed(tmp_path: Path) -> None:
    receiver = HTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    settings: Settings = make_settings(
        tmp_path, mode="conversation-relay",
        message_webhook_url=f"http://127.0.0.1:{receiver.server_port}/hook",
        message_webhook_secret=SECRET, message_email_to="desk@example.test",
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False)
    steps = [("I'd like to leave a message", "your name"),
             ("It's Ana Silva", "call you back"),
             ("this number", "your message"),
             ("Please call me about Rex's teeth.", "Is that right?"),
             ("yes", "passed your message on")]

    async def call(base: str) -> dict:
        call_sid, socket = await open_call(base, settings)
        for text, expected in steps:
            await socket.send(tr.Prompt(voice_prompt=text))
            assert expected in said(await read_reply(socket))
        await socket.close()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    try:
        with serve(settings) as base:
            rec = asyncio.run(call(base))
            for _ in range(100):  # the retry comes 0.5 s after the first failure
                if len(Receiver.received) >= 2 and inbox.mails:
                    break
                asyncio.run(asyncio.sleep(0.05))
    finally:
        receiver.shutdown()
        smtp.stop()
    assert "read that back: Ana Silva, call back on the number you're calling from" in json.dumps(
        rec["turns"])
    body, header = Receiver.received[-1]
    assert header == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sent = json.loads(body)
    assert (sent["name"], sent["callback_number"], sent["call_sid"]) == (
        "Ana Silva", "+15550001111", rec["call"]["call_sid"])  # the caller ID
    assert sent["message"] == "Please call me about Rex's teeth."

    listed = messages_listed(settings)
    [mail] = inbox.mails
    assert "Subject: Message from Ana Silva" in mail and "+15550001111" in mail
    assert "Please call me about Rex's teeth." in mail
    [message] = listed
    assert message["name"] == "Ana Silva" and message["delivered"] == 1


KEYED_STEPS = [("I'd like to leave a message", "your name"), ("It's Ana Silva", "key it in")]
AFTER_KEYS = [("yes", "your message"), ("Please call me about Rex.", "020-555-0134"),
              ("yes", "passed your message on")]


def keyed_record_checks(rec: dict) -> None:
    texts = [(t["role"], t["text"]) for t in rec["turns"]]
    assert ("user", "keyed 0205550134#") in texts
    events = [(e["type"], e["detail"]) for e in rec["events"]]
    assert ("dtmf", {"digit": "0"}) in events and not [e for e in events if e[0] == "tool"]


def test_a_keyed_number_over_conversation_relay(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay", transfer_number="+15550009999")

    async def call(base: str) -> dict:
        call_sid, socket = await open_call(base, settings)
        for text, expected in KEYED_STEPS:
            await socket.send(tr.Prompt(voice_prompt=text))
            assert expected in said(await read_reply(socket))
        for key in "0205550134#":
            await socket.send(tr.Dtmf(digit=key))
        assert said(await read_reply(socket)) == "I have 020-555-0134. Is that right?"
        for text, expected in AFTER_KEYS:
            await socket.send(tr.Prompt(voice_prompt=text))
            assert expected in said(await read_reply(socket))
        await socket.close()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings) as base:
        rec = asyncio.run(call(base))
    keyed_record_checks(rec)
    assert [(m["name"], m["callback_number"]) for m in messages_listed(settings)] == [
        ("Ana Silva", "0205550134")]


def test_a_keyed_number_over_media_streams(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, transfer_number="+15550009999")
    fakes = FakeSet(stt=FakeStt([text for text, _ in KEYED_STEPS + AFTER_KEYS]))

    async def hear(stream: MediaStream, expected: str) -> None:
        """Play out the reply (marks echoed as they come) until ``expected`` was said."""
        async def echo() -> None:
            while True:
                await stream.ack_marks()
                await asyncio.sleep(0.02)
        echoing = asyncio.create_task(echo())
        try:
            await stream.wait_for(lambda: any(expected in t for t in fakes.tts.texts[-2:])
                                  and stream.received[-1].get("event") == "mark"
                                  and all(m.get("_acked") for m in stream.events("mark")))
        finally:
            echoing.cancel()

    async def call(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        for _, expected in KEYED_STEPS:
            await stream.send_audio(tone(1.0) + SILENCE * 40)
            await hear(stream, expected)
        for key in "0205550134#":
            await stream.send({"event": "dtmf", "dtmf": {"track": "inbound_track",
                                                          "digit": key}})
        await hear(stream, "Is that right?")
        assert fakes.tts.texts[-2:] == ["I have 020-555-0134.", "Is that right?"]
        for _, expected in AFTER_KEYS:
            await stream.send_audio(tone(1.0) + SILENCE * 40)
            await hear(stream, expected)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with running_server(create_app(settings, fakes.load), settings) as base:
        rec = asyncio.run(call(base))
    keyed_record_checks(rec)
    assert [(m["name"], m["callback_number"]) for m in messages_listed(settings)] == [
        ("Ana Silva", "0205550134")]
