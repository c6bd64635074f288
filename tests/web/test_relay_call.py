"""ConversationRelay mode through the real server on loopback: real sockets and SQLite, with
scripted fake engines (and one test through the real default models)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from appliance.caller.relay_sim import RelayOptions, RelayReport, RelaySocket, run_relay_call
from appliance.caller.report import CallFailed
from appliance.caller.twilio_wire import RelayTarget, parse_twiml
from appliance.config import Settings
from appliance.core import relay_session
from appliance.engines.fakes import FakeLlm
from appliance.telephony import twilio_relay as tr
from appliance.web.app import create_app
from tests.conftest import AUTH_TOKEN, api_auth, make_settings, running_server
from tests.session.harness import until
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.twilio_client import place_call, sign

QUESTION = "What time do you open tomorrow?"
TRANSFER_TO = "+15550009999"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, mode="conversation-relay", transfer_number=TRANSFER_TO)


@pytest.fixture(autouse=True)
def quick_hand_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twilio would take seconds to speak a goodbye; the fakes need not wait for it."""
    monkeypatch.setattr(relay_session, "SPOKEN_WORDS_PER_S", 100.0)


def serve(settings: Settings, fakes: FakeSet | None = None):
    return running_server(create_app(settings, (fakes or FakeSet()).load), settings)


async def open_call(base: str, settings: Settings) -> tuple[str, RelaySocket]:
    """Webhook, relay socket, setup: what Twilio does when the call is answered."""
    call_sid, body = await place_call(base, settings)
    target = parse_twiml(body)
    assert isinstance(target, RelayTarget)
    socket = await RelaySocket.open(base, target.url, settings.twilio_auth_token)
    await socket.send(tr.Setup(session_id="VX" + uuid.uuid4().hex, call_sid=call_sid,
                               account_sid=settings.twilio_account_sid, from_="+15550001111",
                               to="+15550002222", direction="inbound",
                               custom_parameters=target.parameters))
    return call_sid, socket


async def read_reply(socket: RelaySocket, timeout: float = 10.0) -> list[tr.Text]:
    """The text messages of one reply, up to and including `last: true`."""
    texts: list[tr.Text] = []
    while not (texts and texts[-1].last):
        message = await socket.next(timeout)
        assert isinstance(message, tr.Text), message
        texts.append(message)
    return texts


def said(texts: list[tr.Text]) -> str:
    return "".join(t.token for t in texts).strip()


async def signed_action(base: str, settings: Settings, form: dict[str, str]) -> httpx.Response:
    url = settings.public_base_url + "/twilio/relay/action"
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base}/twilio/relay/action", data=form,
                                 headers={"X-Twilio-Signature": sign(settings, url, form)})


def user_turns(record: dict) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "user"]


def test_voice_webhook_answers_conversation_relay_twiml(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mode="conversation-relay", relay_voice="en-US-Journey-O",
                             relay_tts_provider="Google", relay_transcription_provider="Deepgram",
                             language="en-GB", relay_interruptible="speech",
                             relay_dtmf_detection=False)
    with serve(settings) as base:
        call_sid, body = asyncio.run(place_call(base, settings))
        record = httpx.get(f"{base}/api/calls/{call_sid}", headers=api_auth(base)).json()
    connect_el = ET.fromstring(body).find("Connect")
    assert connect_el is not None
    assert connect_el.get("action") == settings.public_base_url + "/twilio/relay/action"
    relay = connect_el.find("ConversationRelay")
    assert relay is not None and relay.attrib == {
        "url": f"ws://127.0.0.1:{settings.port}/twilio/relay",
        "welcomeGreeting": settings.greeting_text, "voice": "en-US-Journey-O",
        "ttsProvider": "Google", "transcriptionProvider": "Deepgram", "language": "en-GB",
        "interruptible": "speech", "dtmfDetection": "false"}
    params = {p.get("name"): p.get("value") for p in relay.findall("Parameter")}
    ticket = params.pop("ticket")
    assert params == {"callSid": call_sid, "from": "+15550001111", "to": "+15550002222"}
    assert ticket and len(ticket) >= 24  # the one-use socket ticket
    assert record["call"]["mode"] == "conversation-relay"
    assert record["call"]["status"] == "ringing"


def test_unsigned_or_badly_signed_relay_socket_is_refused(settings: Settings) -> None:
    async def attempts(base: str) -> None:
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{settings.port}/twilio/relay"):
                pass
        url = settings.public_base_url.replace("http", "ws", 1) + "/twilio/relay"
        with pytest.raises(CallFailed, match="HTTP 403"):
            await RelaySocket.open(base, url, "not-the-token")
        socket = await RelaySocket.open(base, url, AUTH_TOKEN)  # and the right one is accepted
        await socket.close()

    with serve(settings) as base:
        asyncio.run(attempts(base))


def test_a_relay_call_streams_the_reply_and_logs_everything(settings: Settings) -> None:
    fakes = FakeSet()

    async def call(base: str) -> tuple[list[tr.Text], dict, str]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Prompt(voice_prompt="What time", last=False))  # partial: ignored
        await socket.send(tr.Prompt(voice_prompt=QUESTION, lang="en-US", last=True))
        texts = await read_reply(socket)
        await socket.send(tr.Dtmf(digit="5"))
        await socket.send(tr.Error(description="Invalid message received: {}"))
        await asyncio.sleep(0.2)
        await socket.close()
        record = await wait_record(base, call_sid, lambda r: r["call"]["ended"])
        return texts, record, call_sid

    with serve(settings, fakes) as base:
        texts, record, call_sid = asyncio.run(call(base))
    assert [t.token for t in texts] == ["We open", " at nine.", " See you", " then.", ""]
    assert [t.last for t in texts] == [False] * 4 + [True]
    assert len(fakes.llm.requests) == 1
    call_row = record["call"]
    assert call_row["mode"] == "conversation-relay" and call_row["status"] == "completed"
    assert call_row["stream_sid"].startswith("VX") and call_row["end_reason"] == "socket closed"
    turns = [(t["idx"], t["role"], t["text"], t["heard_text"], t["interrupted"])
             for t in record["turns"]]
    answer = "We open at nine. See you then."
    assert turns == [(0, "assistant", settings.greeting_text, settings.greeting_text, False),
                     (1, "user", QUESTION, None, False),
                     (1, "assistant", answer, answer, False)]
    metrics = record["turns"][-1]["metrics"]
    assert 0 <= metrics["llm_ttft_s"] < 2 and 0 <= metrics["first_token_sent_s"] < 2
    assert metrics["llm_ttft_s"] <= metrics["first_token_sent_s"]
    # the model's prompt reading, stored in the call log: the call's first prompt, nothing cached
    assert metrics["prompt_tokens"] == metrics["prompt_evaluated"] > 0
    assert metrics["prompt_reused"] == 0 and metrics["prompt_threads"] == 1
    assert metrics["tts_provider"] == "twilio:default"
    events = [{"type": e["type"], **e["detail"]} for e in record["events"]]
    assert {"type": "dtmf", "digit": "5"} in events
    assert {"type": "error", "stage": "relay", "code": "twilio-error",
            "reason": "Invalid message received: {}"} in events


def test_interrupt_cancels_and_keeps_only_what_the_caller_heard(settings: Settings) -> None:
    fakes = FakeSet(llm=FakeLlm(["We open", " at nine", " in the morning,", " every day",
                                 " except Sunday."], token_delay_s=0.3))

    async def call(base: str) -> tuple[list[tr.OutboundMessage], list[tr.Text], dict]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Interrupt(utterance_until_interrupt="Thanks for calling",
                                       duration_until_interrupt_ms="900"))
        await socket.send(tr.Prompt(voice_prompt=QUESTION))
        first = await socket.next(5)
        assert isinstance(first, tr.Text) and first.token == "We open"
        await socket.send(tr.Interrupt(utterance_until_interrupt="We open",
                                       duration_until_interrupt_ms=400))
        await until(lambda: fakes.llm.active == 0, "the model stopped")
        assert fakes.llm.produced < 5  # stopped before the end, not just the sending
        fakes.llm._token_delay_s = 0.0
        await socket.send(tr.Prompt(voice_prompt="And on Sunday?"))
        answer = await read_reply(socket)
        await socket.close()
        received = list(socket.received)
        return received, answer, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        received, answer, record = asyncio.run(call(base))
    # Nothing more of the cut reply (no token, no `last: true`): the next reply came next.
    assert said(answer) == "We open at nine in the morning, every day except Sunday."
    assert received == [received[0], *answer]
    assistant = [t for t in record["turns"] if t["role"] == "assistant"]
    greeting, cut, full = assistant
    assert greeting["interrupted"] and greeting["heard_text"] == "Thanks for calling"
    assert cut["interrupted"] and cut["heard_text"] == "We open" and cut["text"] == "We open"
    assert not full["interrupted"] and full["heard_text"] == full["text"]
    assert user_turns(record) == [QUESTION, "And on Sunday?"]
    history = [m.content for m in fakes.llm.requests[-1] if m.role == "assistant"]
    assert history == ["Thanks for calling", "We open"]  # the model remembers what was heard
    assert [e["detail"]["heard"] for e in record["events"] if e["type"] == "interrupt"] == [
        "Thanks for calling", "We open"]


def test_caller_who_keeps_talking_gets_one_answer_to_both(settings: Settings) -> None:
    fakes = FakeSet(llm=FakeLlm(["We open at nine."], first_token_delay_s=0.3))

    async def call(base: str) -> tuple[list[tr.Text], dict]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Prompt(voice_prompt="What time do you open"))
        await asyncio.sleep(0.05)
        await socket.send(tr.Prompt(voice_prompt="tomorrow?"))
        texts = await read_reply(socket)
        await socket.send(tr.Prompt(voice_prompt="Thanks."))
        after = await read_reply(socket)  # a second answer to the first words would come first
        await socket.close()
        assert socket.received == [*texts, *after]  # one reply, not two
        return texts, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        texts, record = asyncio.run(call(base))
    assert said(texts) == "We open at nine."
    assert user_turns(record) == ["What time do you open tomorrow?", "Thanks."]
    assert fakes.llm.requests[-2][-1].content == "What time do you open tomorrow?"


def test_dtmf_zero_transfers_through_the_action_route(settings: Settings) -> None:
    async def call(base: str) -> tuple[list[tr.Text], tr.OutboundMessage | None, dict, list]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Dtmf(digit="0"))
        texts = await read_reply(socket)
        end = await socket.next(5)
        await socket.send(tr.Prompt(voice_prompt="hello?"))  # too late: the call is ending
        assert isinstance(end, tr.End)
        form = {"AccountSid": settings.twilio_account_sid, "CallSid": call_sid,
                "SessionId": "VX1", "SessionStatus": "ended", "HandoffData": end.handoff_data}
        answers = [await signed_action(base, settings, form)]
        async with httpx.AsyncClient() as client:  # unsigned: refused
            answers.append(await client.post(f"{base}/twilio/relay/action", data=form))
        await socket.close()
        record = await wait_record(base, call_sid, lambda r: r["call"]["ended"])
        return texts, end, record, answers

    with serve(settings) as base:
        texts, end, record, (signed, unsigned) = asyncio.run(call(base))
    assert said(texts) == "Sure, let me transfer you to a colleague now."
    assert isinstance(end, tr.End) and json.loads(end.handoff_data)["tool"] == "transfer"
    assert signed.status_code == 200 and unsigned.status_code == 403
    dial = ET.fromstring(signed.text).find("Dial")
    assert dial is not None and dial.text == TRANSFER_TO
    assert record["call"]["end_reason"] == "handed off: transfer"
    events = [(e["type"], e["detail"]) for e in record["events"]]
    assert ("dtmf", {"digit": "0"}) in events and ("tool", {"tool": "transfer"}) in events
    assert ("relay_ended", {"handoff": end.handoff_data, "session_status": "ended"}) in events
    assert user_turns(record) == ["hello?"]  # logged, never answered
    assert record["turns"][-2]["text"] == said(texts)


def test_goodbye_ends_the_session_and_the_action_hangs_up(settings: Settings) -> None:
    async def call(base: str) -> tuple[RelayReport, dict]:
        report = await run_relay_call(RelayOptions.from_settings(
            settings, base_url=base, prompts=("Thanks, goodbye!", "Are you there?"),
            words_per_s=100.0, turn_timeout_s=5))
        return report, await wait_record(base, report.call_sid, lambda r: r["call"]["ended"])

    with serve(settings) as base:
        report, record = asyncio.run(call(base))
    assert [t.said for t in report.turns] == ["Thanks, goodbye!"]  # the call ended there
    assert report.turns[0].reply == settings.goodbye and report.turns[0].first_token_s
    assert report.handoff and json.loads(report.handoff)["tool"] == "end_call"
    assert report.after == "<Hangup>"
    assert record["call"]["end_reason"] == "handed off: end_call"
    assert user_turns(record) == ["Thanks, goodbye!"]


def test_a_failed_turn_apologises_and_the_call_goes_on(settings: Settings) -> None:
    fakes = FakeSet()
    fakes.llm.error = RuntimeError("model exploded")

    async def call(base: str) -> tuple[list[tr.Text], list[tr.Text], dict]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Prompt(voice_prompt=QUESTION))
        apology = await read_reply(socket)
        fakes.llm.error = None
        await socket.send(tr.Prompt(voice_prompt="Do you take insurance?"))
        answer = await read_reply(socket)
        await socket.close()
        return apology, answer, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        apology, answer, record = asyncio.run(call(base))
    assert said(apology) == settings.apology and apology[-1].last
    assert said(answer) == "We open at nine. See you then."
    assert user_turns(record) == [QUESTION, "Do you take insurance?"]
    errors = [e["detail"] for e in record["events"] if e["type"] == "error"]
    assert errors and "model exploded" in errors[0]["reason"]


def test_relay_call_verb_prints_the_streamed_reply(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from appliance.cli import relay_cmd

    settings = make_settings(tmp_path, mode="conversation-relay", greeting="Hello.")
    parser = argparse.ArgumentParser()
    relay_cmd.register(parser.add_subparsers())
    fakes = FakeSet(llm=FakeLlm(["Nine", " tomorrow."]))
    with serve(settings, fakes) as base:
        args = parser.parse_args(["relay-call", "--url", base, "--say", QUESTION])
        assert args.func(args, settings) == 0
        text = capsys.readouterr().out
        args = parser.parse_args(["relay-call", "--url", base, "--say", QUESTION, "--json"])
        assert args.func(args, settings) == 0
        report = json.loads(capsys.readouterr().out)
    assert f"caller: {QUESTION!r}\nagent:  Nine tomorrow.\n        first token " in text
    assert "1/1 prompts answered" in text
    assert report["ok"] and report["turns"][0]["reply"] == "Nine tomorrow."
    assert report["turns"][0]["first_token_s"] >= 0 and report["greeting"] == "Hello."
    assert report["server"]["call"]["mode"] == "conversation-relay"


def test_bad_input_is_refused_and_the_call_goes_on(settings: Settings,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def abuse(base: str) -> tuple[list[tr.Text], dict]:
        call_sid, body = await place_call(base, settings)
        socket = await RelaySocket.open(base, parse_twiml(body).url, AUTH_TOKEN)
        await socket.send(tr.Prompt(voice_prompt=QUESTION))  # before setup
        await socket.send(tr.Dtmf(digit="1"))  # before setup
        await socket.ws.send("this is not json")
        await socket.ws.send('{"type":"surprise","x":1}')
        await socket.ws.send('{"type":"setup"}')  # no callSid
        ticket = parse_twiml(body).parameters
        await socket.send(tr.Setup(session_id="VX1", call_sid=call_sid, custom_parameters=ticket))
        await socket.send(tr.Setup(session_id="VX1", call_sid=call_sid, custom_parameters=ticket))
        await socket.ws.send(json.dumps({"type": "prompt", "voicePrompt": "a " * 2000}))
        await socket.send(tr.Dtmf(digit="12"))
        await socket.send(tr.Prompt(voice_prompt="   "))  # nothing said: no turn
        await socket.send(tr.Prompt(voice_prompt=QUESTION))
        texts = await read_reply(socket)
        await socket.close()
        return texts, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with caplog.at_level(logging.WARNING), serve(settings) as base:
        texts, record = asyncio.run(abuse(base))
        assert httpx.get(f"{base}/healthz").status_code == 200
    assert said(texts) == "We open at nine. See you then."
    for reason in ("prompt before setup", "dtmf before setup", "not JSON",
                   "unknown message type", "setup without callSid", "duplicate setup",
                   "oversize", "bad DTMF digit"):
        assert reason in caplog.text, reason
    assert user_turns(record) == [QUESTION]
    assert record["call"]["status"] == "completed"


def test_a_flood_of_prompts_while_streaming_is_answered_once(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    fakes = FakeSet(llm=FakeLlm(["We open", " at nine.", " See you", " then."],
                                token_delay_s=0.1))

    async def flood(base: str) -> tuple[RelaySocket, dict]:
        call_sid, socket = await open_call(base, settings)
        await socket.send(tr.Prompt(voice_prompt=QUESTION))
        assert isinstance(await socket.next(5), tr.Text)  # the reply is streaming
        for n in range(120):
            await socket.send(tr.Prompt(voice_prompt=f"Tell me about your prices, please ({n})"))
        await read_reply(socket)  # the rest of the first reply
        await read_reply(socket)  # one answer to everything that piled up
        await asyncio.sleep(0.6)
        await socket.close()
        return socket, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with caplog.at_level(logging.WARNING), serve(settings, fakes) as base:
        socket, record = asyncio.run(flood(base))
    assert sum(isinstance(m, tr.Text) and m.last for m in socket.received) == 2
    assert "relay flood" in caplog.text and "prompt dropped" in caplog.text
    users = user_turns(record)
    assert len(users) == 2 and users[0] == QUESTION
    assert users[1].startswith("Tell me about your prices, please (0) Tell me")
    assert len(users[1]) <= relay_session.MAX_PENDING_CHARS
    assistant = [t for t in record["turns"] if t["role"] == "assistant"]
    assert len(assistant) == 3 and len({t["id"] for t in record["turns"]}) == len(record["turns"])
    assert len(fakes.llm.requests) == 2


@pytest.mark.slow
def test_relay_call_through_the_real_default_models(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.wiring import load_engines

    settings = make_settings(tmp_path, mode="conversation-relay")

    async def call(base: str):
        report = await run_relay_call(RelayOptions.from_settings(
            settings, base_url=base, prompts=(QUESTION, "Do you take insurance?"),
            words_per_s=100.0, turn_timeout_s=120))
        return report, await wait_record(base, report.call_sid, lambda r: r["call"]["ended"])

    with running_server(create_app(settings, load_engines), settings, ready_timeout=300) as base:
        report, record = asyncio.run(call(base))
    assert report.ok, report.to_json()
    answers = [t for t in record["turns"] if t["role"] == "assistant" and t["metrics"]]
    assert len(answers) == 2
    with capsys.disabled():
        for turn, row in zip(report.turns, answers, strict=False):
            assert turn.reply and turn.first_token_s is not None
            print(f"\nrelay, real models: {turn.said!r} -> {turn.reply!r}\n  client first token "
                  f"{turn.first_token_s:.2f} s, whole reply {turn.reply_s:.2f} s; server "
                  f"llm_ttft_s {row['metrics']['llm_ttft_s']:.2f}, first_token_sent_s "
                  f"{row['metrics']['first_token_sent_s']:.2f}")
