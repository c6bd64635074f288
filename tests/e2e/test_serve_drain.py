"""`appliance serve` as a real process: SIGTERM lets live calls finish and refuses new ones."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH_TOKEN, make_settings
from tests.web.twilio_client import SILENCE, MediaStream, place_call

pytestmark = pytest.mark.slow


def test_sigterm_drains_live_calls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kb_dir=str(tmp_path / "no-kb"))
    env = {**os.environ, "APPLIANCE_DATA_DIR": settings.data_dir,
           "APPLIANCE_PORT": str(settings.port),
           "APPLIANCE_PUBLIC_BASE_URL": settings.public_base_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "APPLIANCE_KB_DIR": settings.kb_dir}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server never got ready"
            time.sleep(0.2)

        async def scenario() -> tuple[str, bool, httpx.Response]:
            call_sid, twiml = await place_call(base, settings)
            stream = await MediaStream.open(base, settings, call_sid, twiml)
            await stream.wait_for(lambda: stream.events("mark"), timeout=30)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            alive = proc.poll() is None
            async with httpx.AsyncClient() as client:
                health = await client.get(f"{base}/healthz")  # readiness probes now fail
            _, refused = await place_call(base, settings)
            await stream.send_audio(SILENCE * 10)  # the live call's socket still works
            await stream.stop()
            return refused, alive, health

        refused, alive_during_call, health = asyncio.run(scenario())
        assert alive_during_call
        assert health.status_code == 503 and health.json()["status"] == "draining"
        assert "<Say>" in refused and "<Stream" not in refused
        # Exits by itself once the call ended (uvicorn re-raises the SIGTERM it deferred).
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.stdout.read() if proc.stdout else ""
    assert "waiting for 1 live call(s) to end" in output
