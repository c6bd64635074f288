"""A loader that builds the real session machinery around scripted fake engines."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.config import Settings
from appliance.core.agent import Agent
from appliance.core.session import Engines
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm, FakeStt, FakeTts, FakeVad
from appliance.wiring import fixed_phrases, synthesize_phrases


@dataclass
class FakeSet:
    stt: FakeStt = field(default_factory=lambda: FakeStt(["What time do you open tomorrow?"]))
    llm: FakeLlm = field(default_factory=lambda: FakeLlm(
        ["We open", " at nine.", " See you", " then."], token_delay_s=0.01))
    tts: FakeTts = field(default_factory=lambda: FakeTts(ms=400, chunk_ms=100))
    vad: FakeVad = field(default_factory=FakeVad)

    async def load(self, settings: Settings) -> Engines:
        workers = Workers.sized(1, settings.max_calls)
        agent = Agent(settings, self.llm, None, workers)
        phrases = await synthesize_phrases(self.tts, fixed_phrases(settings, agent))
        return Engines(vad=self.vad, stt=self.stt, tts=self.tts, agent=agent, workers=workers,
                       phrases=phrases)
