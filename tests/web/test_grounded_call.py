"""A call whose model invents a fact: the caller hears the document's line, the log counts it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from appliance.config import Settings
from appliance.core.agent import Agent
from appliance.core.session import Engines
from appliance.core.workers import Workers
from appliance.engines.base import EngineInfo, KbChunk
from appliance.engines.fakes import FakeLlm, FakeStt
from appliance.web.app import create_app
from appliance.wiring import fixed_phrases, synthesize_phrases
from tests.conftest import make_settings, running_server
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.twilio_client import SILENCE, MediaStream, place_call, tone

HOURS = KbChunk(id="hours:0", source="hours.md", distance=0.3, heading="Opening hours",
                text="- Monday: open 8:00 am to 5:00 pm\n- Saturday: open 9:00 am to 1:00 pm")


class OneChunkKb:
    info = EngineInfo(slot="kb", name="one-chunk", version="0")

    def search(self, query: str, k: int) -> list[KbChunk]:
        return [HOURS]


@dataclass
class GroundedFakes(FakeSet):
    async def load(self, settings: Settings) -> Engines:
        workers = Workers.sized(1, settings.max_calls)
        agent = Agent(settings, self.llm, OneChunkKb(), workers)
        phrases = await synthesize_phrases(self.tts, fixed_phrases(settings, agent))
        return Engines(vad=self.vad, stt=self.stt, tts=self.tts, agent=agent, workers=workers,
                       phrases=phrases)


def test_an_invented_time_is_replaced_and_logged(tmp_path) -> None:
    settings = make_settings(tmp_path, answer_style="generative")
    fakes = GroundedFakes(stt=FakeStt(["When do you open on Saturday?"]),
                          llm=FakeLlm(["We open", " at ten", " on Saturday.", " Bye."],
                                      token_delay_s=0.01))

    async def call(base: str) -> dict:
        call_sid, twiml = await place_call(base, settings)
        stream = await MediaStream.open(base, settings, call_sid, twiml)
        await stream.wait_for(lambda: stream.events("mark"))
        await stream.ack_marks()
        await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 2)
        await stream.ack_marks()
        await asyncio.sleep(0.2)
        await stream.stop()
        return await wait_record(base, call_sid, lambda r: r["call"]["ended"])

    with running_server(create_app(settings, fakes.load), settings) as base:
        rec = asyncio.run(call(base))
    answer = next(t for t in rec["turns"] if t["role"] == "assistant" and t["metrics"])
    assert answer["text"] == "Saturday: open 9:00 am to 1:00 pm."
    assert fakes.tts.texts[-1] == "Saturday: open 9:00 am to 1:00 pm."
    [event] = [e for e in rec["events"] if e["type"] == "ungrounded"]
    assert "'ten'" in event["detail"]["reason"]
