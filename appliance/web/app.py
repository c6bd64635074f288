"""``create_app()``: the Litestar application, its lifespan and its routes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, FromQuery
from litestar.status_codes import WS_1008_POLICY_VIOLATION, WS_1013_TRY_AGAIN_LATER

from appliance.config import Settings
from appliance.core.agent import Tool
from appliance.core.session import Engines
from appliance.engines.base import Closable
from appliance.telephony import twilio_relay as tr
from appliance.web import twiml
from appliance.web.media_socket import handle_media_socket
from appliance.web.relay_socket import handle_relay_socket
from appliance.web.runtime import CALL_SID, Runtime
from appliance.web.twilio_auth import public_url, socket_url

log = logging.getLogger(__name__)

EngineLoader = Callable[[Settings], Awaitable[Engines]]
XML = "application/xml"


def runtime_of(request: Request[Any, Any, Any] | WebSocket[Any, Any, Any]) -> Runtime:
    return request.app.state.runtime


async def signed_form(request: Request[Any, Any, Any], path: str) -> dict[str, str]:
    """The webhook's form, once its X-Twilio-Signature checks out; else 403."""
    runtime = runtime_of(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    url = public_url(runtime.settings, path, request.url.query)
    if not runtime.signatures.valid(url, form, request.headers.get("x-twilio-signature")):
        log.warning("%s: bad or missing X-Twilio-Signature; refused", path)
        raise PermissionDeniedException("invalid signature")
    return form


async def admitted_socket(socket: WebSocket[Any, Any, Any], path: str, what: str) -> bool:
    """Check a WebSocket upgrade before it takes anything: its signature (same algorithm, exact
    ws(s) URL, no params), then that calls are being taken at all (models loaded, not draining).
    A refusal closes the socket without touching a call slot; the ticket check comes at start."""
    runtime = runtime_of(socket)
    if not runtime.signatures.valid(socket_url(runtime.settings, path), {},
                                    socket.headers.get("x-twilio-signature")):
        runtime.refuse(what, "bad-signature")
        await socket.close(code=WS_1008_POLICY_VIOLATION, reason="invalid signature")
        return False
    if runtime.engines is None or runtime.draining:
        reason = "draining" if runtime.draining else "not-ready"
        runtime.refuse(what, reason)
        await socket.close(code=WS_1013_TRY_AGAIN_LATER, reason=reason)
        return False
    return True


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    runtime = runtime_of(request)
    body: dict[str, Any] = {
        "status": "ready" if runtime.engines else ("failed" if runtime.load_error else "loading"),
        "models": [{"slot": m.slot, "name": m.name, "version": m.version, "device": m.device}
                   for m in runtime.models],
        "active_calls": len(runtime.calls.active),
        "max_calls": runtime.settings.max_calls,
        "mode": runtime.settings.mode,
    }
    if runtime.load_error:
        body["error"] = runtime.load_error
    return Response(body, status_code=200 if runtime.engines else 503)


@post("/twilio/voice", status_code=200)
async def voice(request: Request[Any, Any, Any]) -> Response[str]:
    """Twilio's voice webhook: admit the call and connect its audio to us, or refuse politely."""
    runtime = runtime_of(request)
    form = await signed_form(request, "/twilio/voice")
    call_sid = form.get("CallSid", "")
    if not CALL_SID.fullmatch(call_sid):
        log.warning("voice webhook: missing or malformed CallSid; refused")
        return Response("missing or malformed CallSid", status_code=400, media_type="text/plain")
    settings = runtime.settings
    if runtime.engines is None or runtime.draining:
        log.warning("call %s refused: %s", call_sid,
                    "shutting down" if runtime.draining else "models not ready")
        return Response(str(twiml.busy(settings)), media_type=XML)
    if call_sid in runtime.calls.active:
        log.warning("call %s: webhook again for a live call; refused", call_sid)
        return Response(str(twiml.busy(settings)), media_type=XML)
    if (ticket := runtime.calls.reserve(call_sid)) is None:
        log.warning("call %s refused: %d calls is the limit", call_sid, settings.max_calls)
        await runtime.store.call_started(call_sid, mode=settings.mode, status="busy",
                                         from_number=form.get("From", ""),
                                         to_number=form.get("To", ""))
        await runtime.store.call_ended(call_sid, status="busy", reason="over the call limit")
        return Response(str(twiml.busy(settings)), media_type=XML)
    await runtime.store.call_started(call_sid, mode=settings.mode, status="ringing",
                                     from_number=form.get("From", ""), to_number=form.get("To", ""))
    if settings.mode == "conversation-relay":
        answer = twiml.connect_relay(settings, socket_url(settings, "/twilio/relay"),
                                     public_url(settings, "/twilio/relay/action"), form, ticket)
    else:
        answer = twiml.connect_stream(socket_url(settings, "/twilio/media"), form, ticket)
    return Response(str(answer), media_type=XML)


@post("/twilio/status", status_code=204)
async def status_callback(request: Request[Any, Any, Any]) -> None:
    """Twilio call status callbacks update the call record."""
    runtime = runtime_of(request)
    form = await signed_form(request, "/twilio/status")
    call_sid, status = form.get("CallSid", ""), form.get("CallStatus", "")
    if call_sid and status:
        await runtime.store.update_call(call_sid, status=status)
        if status in {"completed", "busy", "failed", "no-answer", "canceled"}:
            await runtime.store.call_ended(call_sid, status=status, reason="twilio status")


@websocket("/twilio/media")
async def media_socket(socket: WebSocket[Any, Any, Any]) -> None:
    runtime = runtime_of(socket)
    if not await admitted_socket(socket, "/twilio/media", "media"):
        return
    await socket.accept()
    await handle_media_socket(socket, runtime)


@websocket("/twilio/relay")
async def relay_socket(socket: WebSocket[Any, Any, Any]) -> None:
    runtime = runtime_of(socket)
    if not await admitted_socket(socket, "/twilio/relay", "relay"):
        return
    await socket.accept()
    await handle_relay_socket(socket, runtime)


@post("/twilio/relay/action", status_code=200)
async def relay_action(request: Request[Any, Any, Any]) -> Response[str]:
    """Twilio ends a relay session here (<Connect action>): dial the human or hang up."""
    runtime = runtime_of(request)
    form = await signed_form(request, "/twilio/relay/action")
    handoff = form.get("HandoffData", "")
    if call_sid := form.get("CallSid", ""):
        await runtime.store.add_event(call_sid, "relay_ended", handoff=handoff,
                                      session_status=form.get("SessionStatus", ""))
    transfer = tr.handoff_tool(handoff, {t.value for t in Tool}) == Tool.TRANSFER.value
    return Response(str(twiml.after_relay(runtime.settings, transfer)), media_type=XML)


@get("/api/calls/{call_sid:str}")
async def call_record(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> Response[Any]:
    """One call's log (turns, metrics, events), for the simulated caller and local tools only."""
    if not _is_local(request):
        return Response({"error": "local access only"}, status_code=403)
    record = await runtime_of(request).store.call_record(call_sid)
    if record is None:
        return Response({"error": "no such call"}, status_code=404)
    return Response(record)


@get("/api/metrics")
async def metrics(request: Request[Any, Any, Any], reset: FromQuery[bool] = False) -> Response[Any]:
    """Event-loop lag and live call count, for the benchmark (loopback only)."""
    if not _is_local(request):
        return Response({"error": "local access only"}, status_code=403)
    runtime = runtime_of(request)
    body = {"loop_lag": runtime.loop_lag.stats(), "active_calls": len(runtime.calls.active),
            "slots_used": runtime.calls.count(), "refused_sockets": dict(runtime.refused),
            "pid": os.getpid()}
    if reset:
        runtime.loop_lag.reset()
    return Response(body)


def _is_local(request: Request[Any, Any, Any]) -> bool:
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, load_engines: EngineLoader) -> Litestar:
    """Build the app. Models load in the background after start-up so /healthz can report it."""
    runtime = Runtime.create(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.store.open()
        runtime.loop_lag.start()
        task = asyncio.create_task(_load(runtime, load_engines))
        try:
            yield
        finally:
            await runtime.loop_lag.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if runtime.engines is not None:
                runtime.engines.workers.shutdown()
                if isinstance(runtime.engines.tts, Closable):
                    await runtime.engines.tts.aclose()  # the cloud voice's kept-alive connection
            await runtime.store.close()

    app = Litestar(
        route_handlers=[healthz, voice, status_callback, media_socket, relay_socket,
                        relay_action, call_record, metrics],
        lifespan=[lifespan],
        logging_config=None,  # logging is set up once by the CLI, with secret scrubbing
        debug=False,
    )
    app.state.runtime = runtime
    return app


async def _load(runtime: Runtime, load_engines: EngineLoader) -> None:
    try:
        engines = await load_engines(runtime.settings)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        runtime.load_error = f"{type(err).__name__}: {err}"
        log.error("model loading failed: %s", runtime.load_error)
        return
    runtime.models = engines.infos
    runtime.engines = engines
    log.info("ready: %s", ", ".join(f"{m.slot}={m.name}" for m in runtime.models))
