"""``APPLIANCE_LOG_FORMAT=json``: one JSON object per line, secrets scrubbed, ``call_sid`` on a
call's lines: the formatter alone, then a real server and a real (simulated) call."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import setup_logging
from appliance.logs import CALL_SID
from appliance.web.app import create_app
from tests.conftest import make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, tone

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Root logging as ``setup_logging`` leaves it, written to a buffer; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def configure(tmp_path: Path, out: io.StringIO, **overrides: str) -> None:
    setup_logging(make_settings(tmp_path, log_format="json", **overrides))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)


def parsed(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_record_is_one_json_object_scrubbed_and_tagged(tmp_path: Path,
                                                            log_lines: io.StringIO) -> None:
    configure(tmp_path, log_lines, llm_api_key=SECRET)
    log = logging.getLogger("appliance.test")
    log.info("outside a call, key %s", SECRET)

    def in_call() -> None:
        CALL_SID.set("CA0123")
        log.warning("line one\nforged line")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    contextvars.copy_context().run(in_call)
    first, second, third = parsed(log_lines)
    assert first["message"] == "outside a call, key ********" and "call_sid" not in first
    assert (first["level"], first["logger"]) == ("INFO", "appliance.test")
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    # a newline stays inside its JSON string: three records, three lines
    assert second["call_sid"] == "CA0123" and second["message"] == "line one\nforged line"
    assert third["call_sid"] == "CA0123" and "ValueError: boom" in third["exc"]
    assert SECRET not in log_lines.getvalue()


def test_text_stays_the_default(tmp_path: Path, log_lines: io.StringIO) -> None:
    setup_logging(make_settings(tmp_path))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log_lines)
    logging.getLogger("appliance.test").warning("plain")
    assert log_lines.getvalue().rstrip().endswith("WARNING appliance.test: plain")


def test_a_real_call_logs_json_lines_that_carry_its_sid(tmp_path: Path,
                                                        log_lines: io.StringIO) -> None:
    settings = make_settings(tmp_path, log_format="json")
    configure(tmp_path, log_lines)
    with running_server(create_app(settings, FakeSet().load), settings) as base:
        async def call() -> str:
            call_sid, stream = await greeted_call(base, settings)
            await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
            await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
            await stream.ack_marks()
            await stream.stop()
            return call_sid

        call_sid = asyncio.run(call())
        for _ in range(100):
            if "closed" in log_lines.getvalue():
                break
            asyncio.run(asyncio.sleep(0.05))
    lines = parsed(log_lines)  # every line parses
    tagged = [line["message"] for line in lines if line.get("call_sid") == call_sid]
    assert any("media stream" in m and "started" in m for m in tagged), tagged
    assert any(m.startswith(f"call {call_sid} closed") for m in tagged), tagged
    assert all(line.get("call_sid") in (None, call_sid) for line in lines)
    assert any(line["logger"] == "appliance.web.app" or "ready" in line["message"]
               for line in lines if "call_sid" not in line)  # start-up lines: no call
