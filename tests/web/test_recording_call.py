"""Recordings through the real server: real sockets, the Twilio wire, SQLite, FLAC on disk and
the console serving it."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from appliance.config import Settings
from appliance.engines.fakes import FakeTts
from appliance.store.calls import SqliteCallStore
from tests.conftest import api_auth, make_settings
from tests.console.helpers import ADMIN, VIEWER, console_server, login
from tests.unit.test_recordings import CRASH
from tests.web.fake_engines import FakeSet
from tests.web.test_media_call import wait_record
from tests.web.twilio_client import SILENCE, MediaStream, greeted_call, tone

RATE = 8000
CALLER_HZ, AGENT_HZ = 300, 440  # the test caller's tone, the fake voice's


def rms(channel: np.ndarray, start_s: float, end_s: float) -> float:
    part = channel[int(start_s * RATE):int(end_s * RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(part ** 2))) if part.size else 0.0


def pitch(channel: np.ndarray, start_s: float, end_s: float) -> float:
    part = channel[int(start_s * RATE):int(end_s * RATE)].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(part))
    return float(np.fft.rfftfreq(part.size, 1 / RATE)[int(np.argmax(spectrum))])


def voiced(channel: np.ndarray) -> np.ndarray:
    """Which 20 ms windows have sound in them."""
    windows = channel[:channel.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    return np.sqrt(np.mean(windows ** 2, axis=1)) > 500


def voiced_s(channel: np.ndarray) -> float:
    return float(np.sum(voiced(channel)) * 0.02)


def spans(channel: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) in seconds of each stretch of sound."""
    edges = np.diff(np.concatenate(([0], voiced(channel).astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(a * 0.02, b * 0.02) for a, b in zip(starts, ends, strict=True)]


def sent_s(stream: MediaStream) -> float:
    """Seconds of audio the server sent the caller."""
    return sum(len(base64.b64decode(m["media"]["payload"]))
               for m in stream.events("media")) / RATE


def recorded(settings: Settings, call_sid: str) -> tuple[np.ndarray, int]:
    path = settings.recordings_path / f"{call_sid}.flac"
    audio, rate = sf.read(path, dtype="int16", always_2d=True)
    return audio, rate


def test_a_recorded_call_is_a_stereo_flac_the_console_serves(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, recordings=True)

    async def call(base: str) -> tuple[str, int, float, dict]:
        call_sid, stream = await greeted_call(base, settings)
        await asyncio.sleep(0.6)  # the half-second greeting plays out, as on a phone
        # in real time, as Twilio sends (the client may run ahead, its timestamps with it)
        asked = await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40, pace=0.02)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
        await stream.ack_marks()
        await asyncio.sleep(1.5)  # the one-second answer plays out before the caller hangs up
        await stream.stop()
        return call_sid, asked, sent_s(stream), await wait_record(
            base, call_sid, lambda r: r["call"]["ended"])

    with console_server(settings, FakeSet()) as base:
        call_sid, asked_ms, agent_s, rec = asyncio.run(call(base))
        admin, _ = login(base, ADMIN)
        viewer, _ = login(base, VIEWER)
        served = admin.get(f"/console/calls/{call_sid}/recording")
        refused = viewer.get(f"/console/calls/{call_sid}/recording")
        by_api = httpx.get(f"{base}/api/v1/calls/{call_sid}/recording", headers=api_auth(base))
        admin_page = admin.get(f"/console/calls/{call_sid}").text
        viewer_page = viewer.get(f"/console/calls/{call_sid}").text
        detail = httpx.get(f"{base}/api/v1/calls/{call_sid}", headers=api_auth(base)).json()

    audio, rate = recorded(settings, call_sid)
    assert rate == RATE and audio.shape[1] == 2
    left, right = audio[:, 0], audio[:, 1]
    tone_s = asked_ms / 1000 + 0.2  # after the ten frames of silence
    # the caller's channel: their tone where they said it, nothing while the greeting played
    assert rms(left, tone_s + 0.1, tone_s + 0.9) > 3000
    assert abs(pitch(left, tone_s + 0.1, tone_s + 0.9) - CALLER_HZ) < 5
    assert rms(left, 0, 0.4) == 0
    # the agent's: the greeting from the start, silent while the caller spoke, then the answer
    assert rms(right, 0.05, 0.45) > 3000 and abs(pitch(right, 0.05, 0.45) - AGENT_HZ) < 5
    assert rms(right, tone_s + 0.1, tone_s + 0.9) == 0
    assert rms(right, tone_s + 1.0, len(right) / RATE) > 1000
    assert abs(voiced_s(right) - agent_s) <= 0.04  # the greeting and the answer, all heard

    assert rec["call"]["recording"] == f"recordings/{call_sid}.flac"
    assert abs(rec["call"]["recording_s"] - len(audio) / RATE) < 0.01
    assert rec["turns"][0]["text"].endswith("This call may be recorded.")

    assert served.status_code == 200 and served.headers["content-type"] == "audio/flac"
    assert served.content[:4] == b"fLaC"
    assert sf.info(io.BytesIO(served.content)).channels == 2
    assert "no-store" in served.headers["cache-control"]
    assert by_api.status_code == 200 and by_api.content == served.content
    assert refused.status_code == 403
    assert f'src="/console/calls/{call_sid}/recording"' in admin_page
    assert "<audio" not in viewer_page
    assert detail["recording"]["seconds"] == round(len(audio) / RATE, 2)


def test_a_barge_in_cuts_the_agents_channel_where_the_caller_cut_in(tmp_path: Path) -> None:
    """Six seconds of answer are sent in a burst; the caller cuts in after about one: the
    recording keeps what played, not what was sent."""
    settings = make_settings(tmp_path, recordings=True)
    fakes = FakeSet(tts=FakeTts(ms=3000, chunk_ms=200))

    async def call(base: str) -> tuple[str, int, MediaStream]:
        call_sid, stream = await greeted_call(base, settings)
        await asyncio.sleep(3.1)  # the greeting (3 s here) plays out
        await stream.send_audio(tone(1.0) + SILENCE * 30)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)  # both sentences sent
        await asyncio.sleep(1.0)
        cut_in = await stream.send_audio(tone(0.6), pace=0.005)
        await stream.wait_for(lambda: stream.events("clear"))
        await stream.send_audio(SILENCE * 30)
        await asyncio.sleep(3.0)  # long enough that an uncut answer would still be playing
        await stream.stop()
        await wait_record(base, call_sid, lambda r: r["call"]["ended"])
        return call_sid, cut_in, stream

    with console_server(settings, fakes) as base:
        call_sid, cut_in_ms, stream = asyncio.run(call(base))

    audio, _ = recorded(settings, call_sid)
    right = audio[:, 1]
    assert sent_s(stream) >= 8.5  # the greeting and both sentences went out
    greeting, answer, *_ = spans(right)
    assert 2.9 <= greeting[1] - greeting[0] <= 3.1
    # the answer as heard: from when it was sent until the clear, which came as the caller cut
    # in; then silence, until the answer to what they said (cut, in turn, by the hang-up)
    assert answer[1] - answer[0] < 2.5
    assert cut_in_ms / 1000 < answer[1] < cut_in_ms / 1000 + 1.0


def test_a_recording_a_crash_left_is_repaired_at_start_and_viewers_may_be_allowed(
        tmp_path: Path) -> None:
    """The server was killed mid-call: the next start makes the file whole, the call log gets
    its length, and with viewer_recordings a viewer may play it."""
    settings = make_settings(tmp_path, recordings=True, viewer_recordings=True)
    call_sid = "CA" + "4" * 32
    path = settings.recordings_path / f"{call_sid}.flac"
    path.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run([sys.executable, "-c", CRASH, str(path), "3"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr

    async def call_log() -> None:
        store = SqliteCallStore(settings.db_path)
        await store.open()
        await store.update_call(call_sid, status="in-progress", mode="media-streams",
                                recording=f"recordings/{call_sid}.flac")
        await store.close()

    asyncio.run(call_log())
    with console_server(settings, FakeSet()) as base:
        viewer, _ = login(base, VIEWER)
        served = viewer.get(f"/console/calls/{call_sid}/recording")
        rec = httpx.get(f"{base}/api/calls/{call_sid}", headers=api_auth(base)).json()
    assert served.status_code == 200
    audio, rate = sf.read(io.BytesIO(served.content), dtype="int16")
    assert rate == RATE and 2.4 <= len(audio) / RATE <= 3.0
    assert rec["call"]["recording_s"] == round(len(audio) / RATE, 2)
    assert rec["call"]["status"] == "abandoned"  # the crash, as the call log tells it
