"""The console through a real server on loopback: auth, roles, CSRF, rate limit, tokens, the
calls API after a real (simulated) call, CSV, OpenAPI behind auth, metrics and probes."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import threading
import time

import httpx
import uvicorn

from appliance.auth import Accounts, open_accounts_db
from appliance.config import Settings
from appliance.console import FIRST_ADMIN
from appliance.web.app import create_app
from tests.conftest import api_auth
from tests.console.helpers import ADMIN, PASSWORD, VIEWER, console_server, login, login_form_token
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, tone


def make_token(settings: Settings, role: str) -> str:
    return Accounts(open_accounts_db(settings.db_path)).create_token("t", role, actor="test")[1]


def place_answered_call(base: str, settings: Settings) -> str:
    async def call() -> str:
        call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3)
        await stream.ack_marks()
        await asyncio.sleep(0.3)
        await stream.stop()
        return call_sid
    return asyncio.run(call())


def wait_ended(client: httpx.Client, call_sid: str) -> dict:
    deadline = time.monotonic() + 15
    while True:
        detail = client.get(f"/api/v1/calls/{call_sid}").json()
        if detail["call"]["ended"] or time.monotonic() > deadline:
            return detail
        time.sleep(0.1)


def test_nothing_without_credentials(settings: Settings) -> None:
    with console_server(settings) as base:
        for path in ("/api/v1/calls", "/api/v1/calls/CA1", "/api/schema/openapi.json",
                     "/metrics", "/api/v1/export/calls.csv"):
            assert httpx.get(base + path).status_code == 401, path
        page = httpx.get(base + "/console/calls?q=x")
        assert page.status_code == 302
        assert page.headers["location"].startswith("/console/login?next=%2Fconsole%2Fcalls")
        assert httpx.get(base + "/healthz/live").status_code == 200
        assert httpx.get(base + "/healthz/ready").json() == {"status": "ready"}


def test_login_cookie_flags_logout_and_csrf(settings: Settings) -> None:
    with console_server(settings) as base:
        client = httpx.Client(base_url=base)
        token = login_form_token(client, base)
        response = client.post("/console/login", data={
            "username": ADMIN, "password": PASSWORD, "_csrf": token, "next": "//evil.example"})
        assert response.status_code == 303
        assert response.headers["location"] == "/console/calls"  # never an open redirect
        set_cookie = next(h for h in response.headers.get_list("set-cookie")
                      if h.startswith("appliance_session=")).lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        assert "secure" not in set_cookie  # plain-http base URL here
        assert client.get("/api/v1/me").json() == {"name": ADMIN, "role": "admin",
                                                   "via": "session"}

        client, csrf = login(base, ADMIN)
        # A POST without the session's CSRF token is refused, with it accepted.
        assert client.post("/api/v1/kb/ask", json={"question": "hi"}).status_code == 403
        bad = client.post("/api/v1/kb/ask", json={"question": "hi"},
                          headers={"X-CSRF-Token": "x" * 40})
        assert bad.status_code == 403
        ok = client.post("/api/v1/kb/ask", json={"question": "What time do you open?"},
                         headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["answer"]
        assert client.post("/console/logout").status_code == 403  # form without _csrf
        assert client.post("/console/logout", data={"_csrf": csrf}).status_code == 303
        assert client.get("/api/v1/me").status_code == 401

        # The login form itself is double-submit protected.
        fresh = httpx.Client(base_url=base)
        refused = fresh.post("/console/login", data={"username": ADMIN, "password": PASSWORD})
        assert refused.status_code == 403 and "appliance_session" not in fresh.cookies


def test_login_rate_limit_per_address_and_user(settings: Settings) -> None:
    with console_server(settings) as base:
        client = httpx.Client(base_url=base)
        for _ in range(5):
            token = login_form_token(client, base)
            wrong = client.post("/console/login", data={"username": VIEWER, "password": "nope",
                                                        "_csrf": token})
            assert wrong.status_code == 401
        token = login_form_token(client, base)
        locked = client.post("/console/login", data={"username": VIEWER, "password": PASSWORD,
                                                     "_csrf": token})
        assert locked.status_code == 429 and "Too many failed attempts" in locked.text
        login(base, ADMIN)  # another user from the same address is not locked out
        audit = login(base, ADMIN)[0].get("/api/v1/audit").json()
        assert sum(r["action"] == "login.failed" for r in audit) == 5


def test_the_configured_api_token_is_an_admin_credential(log_settings: Settings) -> None:
    """The one credential that exists before any user: APPLIANCE_API_TOKEN (else the local one)."""
    with console_server(log_settings) as base:
        configured = httpx.Client(base_url=base, headers=api_auth(base))
        assert configured.get("/api/v1/system").status_code == 200
        assert configured.get("/api/v1/calls").json()["total"] == 0
        wrong = api_auth(base)["Authorization"] + "x"
        assert httpx.get(base + "/api/v1/system",
                         headers={"Authorization": wrong}).status_code == 401


def test_roles_tokens_and_the_calls_api(log_settings: Settings) -> None:
    """A real call on the configured call log (SQLite, or PostgreSQL as ``database_url``), then
    every console view of it: search, filters, CSV, detail page, metrics."""
    settings = log_settings
    with console_server(settings) as base:
        viewer_token = make_token(settings, "viewer")
        admin_token = make_token(settings, "admin")
        as_viewer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {viewer_token}"})
        as_admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"})
        assert as_viewer.get("/api/v1/system").status_code == 403
        assert as_viewer.get("/api/v1/kb/documents").status_code == 403
        system = as_admin.get("/api/v1/system").json()
        assert system["settings"]["twilio_auth_token"] == "********"
        assert as_viewer.get("/api/schema/openapi.json").json()["paths"]["/api/v1/calls"]
        assert httpx.get(base + "/api/v1/calls",
                         headers={"Authorization": "Bearer apl_forged"}).status_code == 401

        viewer_session, _ = login(base, VIEWER)
        assert viewer_session.get("/console/kb").status_code == 403
        assert viewer_session.get("/console/system").status_code == 403
        assert viewer_session.get("/console/calls").status_code == 200

        call_sid = place_answered_call(base, settings)
        detail = wait_ended(as_viewer, call_sid)
        roles = [t["role"] for t in detail["turns"]]
        assert roles[:3] == ["assistant", "user", "assistant"]
        answer = detail["turns"][2]
        assert answer["text"] == "We open at nine. See you then."
        assert answer["metrics"]["v2v_s"] > 0

        listing = as_viewer.get("/api/v1/calls", params={"q": "open tomorrow"}).json()
        assert [c["call_sid"] for c in listing["calls"]] == [call_sid]
        assert as_viewer.get("/api/v1/calls", params={"q": "OPEN TOMORROW"}).json()["total"] == 1
        assert as_viewer.get("/api/v1/calls", params={"q": "zebra"}).json()["total"] == 0
        assert as_viewer.get("/api/v1/calls", params={"number": "5550001111"}).json()["total"] == 1
        assert as_viewer.get("/api/v1/calls", params={"flag": "abandoned"}).json()["total"] == 0
        assert as_viewer.get("/api/v1/calls", params={"flag": "declined"}).json()["total"] == 0
        paged = as_viewer.get("/api/v1/calls", params={"per_page": 1, "page": 2}).json()
        assert (paged["total"], paged["pages"], paged["calls"]) == (1, 1, [])
        assert as_viewer.get("/api/v1/calls", params={"flag": "bogus"}).status_code == 400
        today = time.strftime("%Y-%m-%d")
        assert as_viewer.get("/api/v1/calls", params={"date_from": today}).json()["total"] == 1
        assert as_viewer.get("/api/v1/calls", params={"date_to": "2000-01-01"}).json()["total"] == 0
        rows = list(csv.DictReader(io.StringIO(as_viewer.get("/api/v1/export/calls.csv").text)))
        assert rows[0]["call_sid"] == call_sid and rows[0]["turns"] == "3"
        page = viewer_session.get(f"/console/calls/{call_sid}")
        assert "We open at nine." in page.text and "What time do you open tomorrow?" in page.text

        metrics = as_viewer.get("/metrics").text
        assert 'appliance_calls_total{outcome="completed"} 1.0' in metrics
        assert "appliance_voice_to_voice_seconds_count 1.0" in metrics
        assert 'appliance_stage_seconds_count{stage="stt"} 1.0' in metrics
        assert "appliance_active_calls 0.0" in metrics
        assert 'appliance_stage_seconds_count{stage="retrieval"} 1.0' in metrics
        assert 'appliance_worker_queue_depth{pool="llm"} 0.0' in metrics
        assert "appliance_live_watchers 0.0" in metrics
        assert "appliance_breaker_state{" not in metrics  # no fail-over configured, no breaker


def test_probes_and_the_first_admin_hint(settings: Settings, caplog) -> None:
    """Ready answers 503 while models load; with no admin, start-up names the command."""
    release = threading.Event()
    fakes = FakeSet()

    async def slow_load(s: Settings):
        await asyncio.to_thread(release.wait, 30)
        return await fakes.load(s)

    app = create_app(settings, slow_load)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.WARNING):
        thread.start()
        base = f"http://127.0.0.1:{settings.port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    live = httpx.get(f"{base}/healthz/live")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert live.status_code == 200
            loading = httpx.get(f"{base}/healthz/ready")
            assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
            release.set()
            while httpx.get(f"{base}/healthz/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            app.state.runtime.draining = True
            assert httpx.get(f"{base}/healthz/ready").json() == {"status": "draining"}
        finally:
            release.set()
            server.should_exit = True
            thread.join(timeout=30)
    assert FIRST_ADMIN in caplog.text


def test_live_calls_and_an_operator_hang_up(log_settings: Settings) -> None:
    settings = log_settings
    with console_server(settings) as base:
        as_admin = httpx.Client(base_url=base, headers={
            "Authorization": f"Bearer {make_token(settings, 'admin')}"})
        as_viewer = httpx.Client(base_url=base, headers={
            "Authorization": f"Bearer {make_token(settings, 'viewer')}"})

        async def call() -> None:
            call_sid, stream = await greeted_call(base, settings)
            async with httpx.AsyncClient(base_url=base, headers=as_viewer.headers) as viewer:
                live = (await viewer.get("/api/v1/live")).json()
                assert [c["call_sid"] for c in live] == [call_sid]
                assert live[0]["turns"][0]["text"].startswith("Thanks for calling")
                assert live[0]["state"] in {"listening", "speaking", "thinking"}
                refused = await viewer.post(f"/api/v1/live/{call_sid}/hangup")
                assert refused.status_code == 403
            async with httpx.AsyncClient(base_url=base, headers=as_admin.headers) as admin:
                transfer = await admin.post(f"/api/v1/live/{call_sid}/transfer")
                assert transfer.status_code == 409 and "transfer number" in transfer.text
                assert (await admin.post(f"/api/v1/live/{call_sid}/hangup")).status_code == 200
            # Without Twilio credentials the hang-up closes the media socket, as Twilio would.
            for _ in range(100):
                if stream.ws.close_code is not None:
                    break
                await asyncio.sleep(0.05)
            assert stream.ws.close_code is not None
            stream._reader.cancel()

        asyncio.run(call())
        deadline = time.monotonic() + 10
        while as_admin.get("/api/v1/live").json():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        actions = [r["action"] for r in as_admin.get("/api/v1/audit").json()]
        assert actions[:2] == ["call.hangup", "call.transfer"]


def test_knowledge_base_api_upload_ask_delete(settings: Settings, tmp_path) -> None:
    with console_server(settings) as base:
        admin = httpx.Client(base_url=base, timeout=120, headers={
            "Authorization": f"Bearer {make_token(settings, 'admin')}"})
        bad = admin.post("/api/v1/kb/documents", files={"file": ("evil.exe", b"MZ")})
        assert bad.status_code == 400 and "unsupported file type" in bad.text
        sneaky = admin.post("/api/v1/kb/documents",
                            files={"file": ("../../etc/x.md", b"# X\n\nThe boat is blue.\n")})
        assert sneaky.status_code == 201
        assert sneaky.json()["path"].endswith("kb-uploads/x.md")  # no path escapes
        docs = admin.get("/api/v1/kb/documents").json()
        assert [(d["source"], d["chunks"], d["uploaded"]) for d in docs] == [("x.md", 1, True)]
        asked = admin.post("/api/v1/kb/ask", json={"question": "What colour is the boat?"}).json()
        assert asked["sources"][0]["source"] == "x.md"  # retrieval sees the upload at once
        removed = admin.post("/api/v1/kb/documents/delete", json={"path": docs[0]["path"]})
        assert removed.json() == {"removed": ["x.md"]}
        assert admin.get("/api/v1/kb/documents").json() == []
        assert admin.post("/api/v1/kb/documents/delete",
                          json={"path": docs[0]["path"]}).status_code == 404


def test_the_system_page_shows_gpu_memory_and_breakers(settings: Settings, tmp_path,
                                                       monkeypatch) -> None:
    """GPU memory as nvidia-smi reports it (a stand-in script here); no breaker without a
    fail-over configured (the breakers' states: tests/web/test_tts_failover_call.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 52301, 143771'\n")
    smi.chmod(0o755)
    with console_server(settings) as base:
        as_admin = httpx.Client(base_url=base, headers={
            "Authorization": f"Bearer {make_token(settings, 'admin')}"})
        monkeypatch.setenv("PATH", str(bin_dir))
        system = as_admin.get("/api/v1/system").json()
        assert system["gpus"] == [{"name": "NVIDIA H200", "used_mb": 52301,
                                   "total_mb": 143771}]
        assert system["breakers"] == {}
        admin, _ = login(base, ADMIN)
        page = admin.get("/console/system").text
        assert "NVIDIA H200 52301 / 143771 MiB" in page and "none configured" in page
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        assert as_admin.get("/api/v1/system").json()["gpus"] is None
        assert "no working nvidia-smi" in admin.get("/console/system").text
