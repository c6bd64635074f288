"""The benchmark's misbehaving client against the real server: each attack ends as refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from appliance.bench import adversary as adv
from appliance.bench.adversary import ACCEPTED
from appliance.bench.report import adversary_lines
from appliance.core.audio import pcm16_to_ulaw8k
from appliance.web.app import create_app
from tests.conftest import api_auth, make_settings, running_server
from tests.web.fake_engines import FakeSet

# A tone: speech to the fake VAD, which goes by energy (Silero does not take it for speech).
VOICE = pcm16_to_ulaw8k((9000 * np.sin(2 * np.pi * 220 * np.arange(4000) / 8000))
                        .astype(np.int16), 8000)


def test_every_attack_is_refused_and_leaves_no_slot(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adv, "RADIO_S", 1.0)
    settings = make_settings(tmp_path, start_timeout_s=0.5, max_calls=2)

    async def attack(base: str) -> tuple[dict[str, str], dict]:
        async with httpx.AsyncClient() as http:
            client = adv.Adversary(base, settings, http, VOICE)
            endings = {name: await run() for name, run in client.attacks.items()}
            await asyncio.sleep(0.5)
            return endings, (await http.get(f"{base}/api/metrics", headers=api_auth(base))).json()

    with running_server(create_app(settings, FakeSet().load), settings) as base:
        endings, metrics = asyncio.run(attack(base))
    kinds = {name: adv._kind(ending) for name, ending in endings.items()}
    assert kinds == {"idle": "no start within 0.5 s", "no-ticket": "no-ticket",
                     "bad-sid": "bad-sid", "garbage": "no start within 0.5 s",
                     # each nested frame is refused on its own (the socket is not ended for it):
                     "nested-json": "no start within 0.5 s", "burst": "no start within 0.5 s",
                     "audio-flood": "audio-flood", "radio": "completed"}
    assert ACCEPTED not in endings.values()
    assert metrics["slots_used"] == 0 and metrics["active_calls"] == 0
    assert metrics["refused_sockets"]["no-start"] >= 15  # idle, garbage, nested, 12 at once
    lines = adversary_lines(2, {"tried": {"idle": 1}, "endings": {"no-start": 1},
                                "refused_sockets": {"no-start": 1}, "slots_used_after": 0,
                                "rss_after_mb": 900.0})
    assert lines[0] == "adversary beside 2 call(s): tried idle 1" and "RSS 900 MB" in lines[3]
