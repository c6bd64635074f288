"""The real server on loopback, real sockets and SQLite, with scripted fake engines."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from appliance.caller.twilio_wire import parse_twiml
from appliance.config import Settings
from appliance.core.playout import HOLD_MARK_PREFIX
from appliance.engines.fakes import FakeTts
from appliance.web.app import create_app
from tests.conftest import api_auth, make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import (
    SILENCE,
    MediaStream,
    greeted_call,
    place_call,
    start_message,
    tone,
)

STREAM_SID = "MZ" + "0" * 32


def record(base: str, call_sid: str) -> dict:
    return httpx.get(f"{base}/api/calls/{call_sid}", headers=api_auth(base), timeout=5).json()


async def wait_record(base: str, call_sid: str, predicate, timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with httpx.AsyncClient() as client:
            rec = (await client.get(f"{base}/api/calls/{call_sid}",
                                    headers=api_auth(base))).json()
        if predicate(rec) or asyncio.get_running_loop().time() > deadline:
            return rec
        await asyncio.sleep(0.05)


def serve(settings: Settings, fakes: FakeSet | None = None):
    return running_server(create_app(settings, (fakes or FakeSet()).load), settings)


def test_voice_webhook_signature_and_twiml(settings: Settings) -> None:
    with serve(settings) as base:
        call_sid, twiml = asyncio.run(place_call(base, settings))
        assert "<Connect><Stream" in twiml
        assert f"ws://127.0.0.1:{settings.port}/twilio/media" in twiml
        assert f'<Parameter name="callSid" value="{call_sid}"' in twiml
        form = {"CallSid": "CA1", "From": "+1"}
        assert httpx.post(f"{base}/twilio/voice", data=form).status_code == 403
        bad = httpx.post(f"{base}/twilio/voice", data=form, headers={"X-Twilio-Signature": "x"})
        assert bad.status_code == 403
        assert record(base, call_sid)["call"]["status"] == "ringing"


def test_unsigned_media_socket_is_refused(settings: Settings) -> None:
    from websockets.asyncio.client import connect

    async def attempt() -> None:
        async with connect(f"ws://127.0.0.1:{settings.port}/twilio/media"):
            pass

    with serve(settings):
        with pytest.raises(InvalidStatus):
            asyncio.run(attempt())


def test_a_call_greets_answers_and_logs_everything(settings: Settings) -> None:
    fakes = FakeSet()

    async def call(base: str) -> tuple[MediaStream, dict]:
        call_sid, twiml = await place_call(base, settings)
        stream = await MediaStream.open(base, settings, call_sid, twiml)
        await stream.wait_for(lambda: stream.events("mark"))  # greeting played
        greeting_frames = len(stream.events("media"))
        await stream.ack_marks()
        await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
        assert len(stream.events("media")) > greeting_frames
        await stream.ack_marks()
        await stream.send({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}})
        await asyncio.sleep(0.2)
        await stream.stop()
        rec = await wait_record(base, call_sid, lambda r: r["call"]["ended"])
        return stream, rec

    with serve(settings, fakes) as base:
        stream, rec = asyncio.run(call(base))
    assert not stream.events("clear")
    assert rec["call"]["status"] == "completed" and rec["call"]["stream_sid"] == stream.stream_sid
    roles = [(t["role"], t["text"]) for t in rec["turns"]]
    assert roles[0] == ("assistant", settings.greeting_text)
    assert ("user", "What time do you open tomorrow?") in roles
    answer = next(t for t in rec["turns"] if t["role"] == "assistant" and t["metrics"])
    assert answer["text"] == "We open at nine. See you then." and not answer["interrupted"]
    metrics = answer["metrics"]
    for key in ("endpoint_s", "stt_s", "llm_ttft_s", "first_sentence_s", "tts_first_audio_s",
                "v2v_s"):
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert {"type": "dtmf", "digit": "5"} in [
        {"type": e["type"], **e["detail"]} for e in rec["events"]]
    assert fakes.tts.texts[-2:] == ["We open at nine.", "See you then."]


def test_barge_in_clears_and_keeps_only_what_was_heard(settings: Settings) -> None:
    # 6 s a sentence: the barge-in comes long before the second one could have played out.
    fakes = FakeSet(tts=FakeTts(ms=6000, chunk_ms=200))

    async def call(base: str) -> tuple[MediaStream, dict]:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(1.0) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)  # both sentences sent
        await stream.ack_marks(upto=2)  # the caller heard the first sentence, not the second
        await asyncio.sleep(0.3)
        await stream.send_audio(tone(0.6), pace=0.005)
        await stream.wait_for(lambda: stream.events("clear"))
        await stream.send_audio(SILENCE * 30)
        await asyncio.sleep(0.3)
        await stream.stop()
        rec = await wait_record(base, call_sid, lambda r: r["call"]["ended"])
        return stream, rec

    with serve(settings, fakes) as base:
        stream, rec = asyncio.run(call(base))
    interrupted = [t for t in rec["turns"] if t["interrupted"]]
    assert interrupted, rec["turns"]
    turn = interrupted[0]
    assert turn["text"] == "We open at nine. See you then."
    assert turn["heard_text"].startswith("We open at nine.") and turn["heard_text"] != turn["text"]
    assert "barge-in" in [e["type"] for e in rec["events"]]
    # The next question reaches the model with what the caller heard, not what was planned.
    remembered = [m.content for m in fakes.llm.requests[-1] if m.role == "assistant"]
    assert remembered[-1] == turn["heard_text"]


def test_a_caller_who_talks_over_every_answer_is_answered_after_a_long_pause(
        settings: Settings) -> None:
    """Through the socket: three answers talked over, then the next question is answered only
    after the longest silence; an answer heard to the end brings the short one back."""
    fakes = FakeSet(tts=FakeTts(ms=3000, chunk_ms=200))  # long enough to be talked over

    async def call(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        for n in range(1, 4):
            answering = len(stream.events("mark"))
            await stream.send_audio(tone(1.0) + SILENCE * 30)  # a question, 0.6 s of silence
            await stream.wait_for(lambda a=answering: len(stream.events("mark")) > a)
            await stream.send_audio(tone(0.6), pace=0.005)  # ...talked over
            await stream.wait_for(lambda n=n: len(stream.events("clear")) == n)
        answering = len(stream.events("mark"))
        await stream.send_audio(tone(1.0) + SILENCE * 60)  # 1.2 s: now only this ends the turn
        await stream.wait_for(lambda: len(stream.events("mark")) >= answering + 2, timeout=15)
        await stream.ack_marks()  # heard to the end
        await stream.send_audio(tone(1.0) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= answering + 4, timeout=15)
        await stream.ack_marks()
        await asyncio.sleep(0.3)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        rec = asyncio.run(call(base))
    assert [e["detail"] for e in rec["events"] if e["type"] == "patient"] == [{"talked_over": 3}]
    waits = [t["metrics"]["endpoint_s"] for t in rec["turns"] if t["metrics"]]
    assert len(waits) == 5, rec["turns"]
    assert max(waits[:3]) < 1.0  # answered at 0.6 s of silence
    assert waits[3] >= 1.0  # talked over three times: waited for the longest silence
    assert waits[4] < 1.0  # the answer before was heard out: the short pause again


def test_stt_failure_plays_the_apology_and_the_call_goes_on(settings: Settings) -> None:
    fakes = FakeSet()
    fakes.stt.error = RuntimeError("decoder exploded")

    async def call(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)
        await stream.ack_marks()
        fakes.stt.error = None
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 4)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        rec = asyncio.run(call(base))
    errors = [e for e in rec["events"] if e["type"] == "error"]
    assert errors and "decoder exploded" in errors[0]["detail"]["reason"]
    assert any(t["role"] == "user" for t in rec["turns"])  # the second turn was answered
    assert rec["call"]["status"] == "completed"


def test_over_the_limit_callers_hear_a_polite_busy(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_calls=1)

    async def calls(base: str) -> str:
        await place_call(base, settings)
        return (await place_call(base, settings))[1]

    with serve(settings) as base:
        twiml = asyncio.run(calls(base))
    assert "<Say>" in twiml and "<Hangup" in twiml and "<Stream" not in twiml


def test_bad_input_is_refused_and_other_calls_are_unhurt(settings: Settings,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    async def abuse(base: str) -> tuple[MediaStream, dict]:
        good_sid, good_twiml = await place_call(base, settings)
        good = await MediaStream.open(base, settings, good_sid, good_twiml)
        from websockets.asyncio.client import connect

        from tests.web.twilio_client import sign
        url = settings.public_base_url.replace("http", "ws", 1) + "/twilio/media"
        headers = {"X-Twilio-Signature": sign(settings, url, {})}
        async with connect(f"{base.replace('http', 'ws', 1)}/twilio/media",
                           additional_headers=headers) as bad:
            await bad.send('{"event":"media","media":{"payload":"/w=="}}')  # before start
            await bad.send("this is not json")
            await bad.send('{"event":"surprise"}')
            bad_sid, bad_twiml = await place_call(base, settings)
            ticket = parse_twiml(bad_twiml).parameters
            await bad.send(json.dumps(start_message(settings, bad_sid, STREAM_SID, ticket)))
            await bad.send('{"event":"media","media":{"payload":"***"}}')
            await bad.send('{"event":"media","media":{"payload":"' + "A" * 20000 + '"}}')
            for _ in range(600):  # a flood
                await bad.send('{"event":"media","media":{"payload":"/w=="}}')
        # ...and the socket was dropped without a stop. The good call still works:
        await good.wait_for(lambda: good.events("mark"))
        await good.ack_marks()
        await good.send_audio(tone(0.8) + SILENCE * 30)
        await good.wait_for(lambda: len(good.events("mark")) >= 2)
        await good.stop()
        rec = await wait_record(base, bad_sid, lambda r: r["call"]["ended"])
        return good, rec

    with caplog.at_level(logging.WARNING), serve(settings) as base:
        good, bad_record = asyncio.run(abuse(base))
        assert httpx.get(f"{base}/healthz").status_code == 200
    text = caplog.text
    for reason in ("media before start", "not JSON", "invalid message", "bad base64", "oversize",
                   "media flood"):
        assert reason in text, reason
    assert bad_record["call"]["ended"] and bad_record["call"]["end_reason"] == "socket closed"


def test_transcription_starts_at_the_pause_and_is_reused(settings: Settings) -> None:
    fakes = FakeSet()
    fakes.stt = type(fakes.stt)(["What time do you open tomorrow?"], delay_s=0.3)

    async def call(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(1.0) + SILENCE * 40, pace=0.02)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        rec = asyncio.run(call(base))
    metrics = next(t["metrics"] for t in rec["turns"] if t["metrics"])
    assert len(fakes.stt.calls) == 1  # one transcription, started early, not repeated
    assert metrics["stt_s"] is not None  # how much of it overlapped: tests/session


def test_metrics_report_event_loop_lag(settings: Settings) -> None:
    with serve(settings) as base:
        import time
        time.sleep(0.3)
        body = httpx.get(f"{base}/api/metrics", headers=api_auth(base)).json()
        assert body["loop_lag"]["samples"] > 0 and body["loop_lag"]["p99_ms"] >= 0
        assert httpx.get(f"{base}/api/metrics?reset=true",
                         headers=api_auth(base)).status_code == 200
        assert body["active_calls"] == 0 and body["pid"] > 0


def test_goodbye_is_said_then_the_server_hangs_up(settings: Settings) -> None:
    fakes = FakeSet()
    fakes.stt = type(fakes.stt)(["Okay, goodbye."])

    async def call(base: str) -> tuple[MediaStream, dict]:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)

        async def play_until_closed() -> None:
            # Echo each mark as it comes (a loaded box may say "one moment" before the goodbye):
            # once the goodbye has played, the server closes the stream.
            while not stream._reader.done():
                await stream.ack_marks()
                await asyncio.sleep(0.02)

        await asyncio.wait_for(play_until_closed(), 10)
        return stream, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        stream, rec = asyncio.run(call(base))
    said = [t["text"] for t in rec["turns"] if t["role"] == "assistant"]
    assert said[-1] == settings.goodbye
    assert {"type": "tool", "tool": "end_call"} in [
        {"type": e["type"], **e["detail"]} for e in rec["events"]]
    assert fakes.llm.requests == []  # the tool decided; no model call


def test_transfer_without_twilio_credentials_apologises_and_goes_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, transfer_number="+15550009999")
    fakes = FakeSet()
    fakes.stt = type(fakes.stt)(["Can I talk to a real person please?"])

    async def call(base: str) -> tuple[MediaStream, dict]:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)
        await stream.ack_marks()
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)  # the apology
        await stream.stop()
        return stream, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        stream, rec = asyncio.run(call(base))
    errors = [e["detail"] for e in rec["events"] if e["type"] == "error"]
    assert errors and errors[0]["stage"] == "transfer"
    assert rec["call"]["end_reason"] == "stop received"


def test_calls_before_the_models_are_ready_hear_a_polite_busy(settings: Settings) -> None:
    import threading
    import time

    import uvicorn

    release = asyncio.Event()

    async def never_ready(_: Settings):
        await release.wait()

    server = uvicorn.Server(uvicorn.Config(create_app(settings, never_ready), host="127.0.0.1",
                                           port=settings.port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    try:
        for _ in range(100):
            try:
                health = httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert health.status_code == 503 and health.json()["status"] == "loading"
        _, twiml = asyncio.run(place_call(base, settings))
        assert "<Say>" in twiml and "<Stream" not in twiml
    finally:
        server.should_exit = True
        thread.join(10)


def test_concurrent_calls_are_each_answered(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_calls=3)
    fakes = FakeSet()
    fakes.stt = type(fakes.stt)(["What time do you open tomorrow?"], delay_s=0.2)

    async def one(base: str) -> dict:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(0.8) + SILENCE * 30, pace=0.02)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3, timeout=20)
        await stream.ack_marks()
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    async def calls(base: str) -> list[dict]:
        return await asyncio.gather(*(one(base) for _ in range(3)))

    with serve(settings, fakes) as base:
        records = asyncio.run(calls(base))
    for rec in records:
        answers = [t for t in rec["turns"] if t["role"] == "assistant" and t["metrics"]]
        assert answers and answers[0]["text"] == "We open at nine. See you then."
    assert len({rec["call"]["call_sid"] for rec in records}) == 3


def test_a_slow_answer_gets_a_hold_phrase_instead_of_silence(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, hold_after_ms=300)
    fakes = FakeSet()
    fakes.llm = type(fakes.llm)(["We open at nine."], first_token_delay_s=1.0)

    async def call(base: str) -> tuple[MediaStream, dict]:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(tone(0.8) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
        await stream.ack_marks()
        await stream.stop()
        return stream, await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with serve(settings, fakes) as base:
        stream, rec = asyncio.run(call(base))
    marks = [m["mark"]["name"] for m in stream.events("mark")]
    assert marks[1].startswith(HOLD_MARK_PREFIX) and marks[2].startswith("t1-")  # hold, answer
    answer = next(t for t in rec["turns"] if t["metrics"])
    assert answer["text"] == "We open at nine."  # the hold phrase is not part of the answer


def test_without_twilio_token_only_the_local_caller_gets_through(tmp_path: Path) -> None:
    from twilio.request_validator import RequestValidator

    settings = make_settings(tmp_path, twilio_auth_token="")
    with serve(settings) as base:
        call_sid, twiml = asyncio.run(place_call(base, settings))  # signs with the local token
        assert "<Stream" in twiml
        form = {"CallSid": "CA2", "From": "+1"}
        url = settings.public_base_url + "/twilio/voice"
        forged = RequestValidator("someone-elses-token").compute_signature(url, form)
        refused = httpx.post(f"{base}/twilio/voice", data=form,
                             headers={"X-Twilio-Signature": forged})
        assert refused.status_code == 403


def test_the_simulated_caller_waits_through_a_hold_phrase(tmp_path: Path) -> None:
    from appliance.caller import CallOptions, Utterance, run_call

    settings = make_settings(tmp_path, hold_after_ms=300)
    fakes = FakeSet()
    fakes.llm = type(fakes.llm)(["We open at nine."], first_token_delay_s=1.5)
    speech = Utterance.from_ulaw("a question", tone(0.8))
    opts = CallOptions.from_settings(settings, utterances=(speech,), reply_quiet_s=0.5,
                                     greeting_quiet_s=0.3, turn_timeout_s=10)
    with serve(settings, fakes):
        report = asyncio.run(run_call(opts))
    assert report.ok and not report.turns[0].timed_out
    assert report.turns[0].agent == "We open at nine."  # the answer, not "One moment, please."
