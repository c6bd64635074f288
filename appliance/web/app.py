"""``create_app()``: the Litestar application, its lifespan and its routes."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import ASGIConnection, WebSocket
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.status_codes import (
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    WS_1008_POLICY_VIOLATION,
    WS_1013_TRY_AGAIN_LATER,
)

from appliance import console
from appliance.config import Settings
from appliance.core.agent import Tool
from appliance.core.session import Engines
from appliance.engines.base import Closable
from appliance.engines.failover_llm import token_counts
from appliance.telephony import twilio_relay as tr
from appliance.telephony.sids import is_call_sid
from appliance.web import twiml
from appliance.web.cluster import admit, cluster_from_settings
from appliance.web.cluster_live import ClusterLive
from appliance.web.hosts import allowed_hosts, host_allow_list
from appliance.web.media_socket import handle_media_socket
from appliance.web.relay_socket import handle_relay_socket
from appliance.web.runtime import Runtime
from appliance.web.twilio_auth import public_url, socket_url

log = logging.getLogger(__name__)

EngineLoader = Callable[[Settings], Awaitable[Engines]]
XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
# Twilio's largest webhook form (the voice webhook with every optional field) is a few KB.
WEBHOOK_MAX_BYTES = 64 * 1024


def runtime_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Runtime:
    return connection.app.state.runtime


async def signed_form(request: Request[Any, Any, Any], path: str) -> dict[str, str]:
    """The webhook's form, once its X-Twilio-Signature checks out; else 403.

    Without the header nothing is read (403 at once); a body over WEBHOOK_MAX_BYTES or not a
    form is refused (413, 415) before it is parsed; a form whose ``CallSid`` is not a Twilio
    call SID is refused (400) once signed, so it never reaches the log or the call record.
    """
    runtime = runtime_of(request)
    signature = request.headers.get("x-twilio-signature")
    if not signature and runtime.signatures.enabled:
        runtime.refusals.warning("signature", "%s: no X-Twilio-Signature; refused unread", path)
        raise PermissionDeniedException("invalid signature")
    if request.content_type[0] != FORM:
        runtime.refusals.warning("body", "%s: content type %r is not a form; refused", path,
                                 request.content_type[0][:60])
        raise ClientException("expected a form", status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE)
    try:
        form = {k: str(v) for k, v in (await request.form()).items()}
    except RequestEntityTooLarge:
        runtime.refusals.warning("body", "%s: body over %d bytes; refused", path,
                                 WEBHOOK_MAX_BYTES)
        raise
    # Behind a shared load balancer, Twilio signs the number's webhook URL, not this box's own.
    settings = runtime.settings
    bases = filter(None, [settings.public_base_url, settings.webhook_base_url])
    urls = [public_url(msgspec.structs.replace(settings, public_base_url=base), path,
                       request.url.query) for base in bases]
    if not any(runtime.signatures.valid(url, form, signature) for url in urls):
        runtime.refusals.warning("signature", "%s: bad X-Twilio-Signature; refused", path)
        raise PermissionDeniedException("invalid signature")
    if "CallSid" in form and not is_call_sid(form["CallSid"]):
        runtime.refusals.warning("sid", "%s: CallSid %r is not a call SID; refused", path,
                                 form["CallSid"][:40])
        raise ClientException("CallSid is not a Twilio call SID")
    return form


async def admitted_socket(socket: WebSocket[Any, Any, Any], path: str, what: str) -> bool:
    """Check a WebSocket upgrade before it takes anything: its signature (same algorithm, the
    ws(s) URL as requested, query included, no params), then that calls are being taken at all
    (models loaded, not draining). A refusal closes the socket without touching a call slot;
    the ticket check comes at start."""
    runtime = runtime_of(socket)
    url = socket_url(runtime.settings, path, socket.url.query)
    if not runtime.signatures.valid(url, {}, socket.headers.get("x-twilio-signature")):
        runtime.refuse(what, "bad-signature", f"{path}: bad or missing X-Twilio-Signature")
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
    if runtime.draining:  # not ready for new calls: a load balancer stops sending them here
        body["status"] = "draining"
    if runtime.cluster is not None:
        body["cluster"] = await runtime.cluster.view()
    ready = runtime.engines is not None and not runtime.draining
    return Response(body, status_code=200 if ready else 503)


@post("/twilio/voice", status_code=200)
async def voice(request: Request[Any, Any, Any]) -> Response[str]:
    """Twilio's voice webhook: admit the call and connect its audio to us, or refuse politely."""
    runtime = runtime_of(request)
    form = await signed_form(request, "/twilio/voice")
    call_sid = form.get("CallSid", "")
    if not is_call_sid(call_sid):
        log.warning("voice webhook: missing CallSid; refused")
        return Response("missing CallSid", status_code=400, media_type="text/plain")
    settings = runtime.settings
    if call_sid in runtime.calls.active:
        log.warning("call %s: webhook again for a live call; refused", call_sid)
        return Response(str(twiml.busy(settings)), media_type=XML)
    admission = await admit(runtime, call_sid)
    if admission is None and runtime.cluster is None and (runtime.engines is None
                                                          or runtime.draining):
        log.warning("call %s refused: %s", call_sid,
                    "shutting down" if runtime.draining else "models not ready")
        return Response(str(twiml.busy(settings)), media_type=XML)
    if admission is None:
        log.warning("call %s refused: every line is busy (%d calls per box)", call_sid,
                    settings.max_calls)
        await runtime.store.call_started(call_sid, mode=settings.mode, status="busy",
                                         from_number=form.get("From", ""),
                                         to_number=form.get("To", ""))
        await runtime.store.call_ended(call_sid, status="busy", reason="over the call limit")
        return Response(str(twiml.busy(settings)), media_type=XML)
    await runtime.store.call_started(call_sid, mode=settings.mode, status="ringing",
                                     from_number=form.get("From", ""), to_number=form.get("To", ""))
    target, ticket = admission  # the box taking it, and the ticket its socket will accept
    settings = msgspec.structs.replace(settings, public_base_url=target)
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


def api_guard(connection: ASGIConnection[Any, Any, Any, Any], _route: BaseRouteHandler) -> None:
    """``/api/*`` needs ``Authorization: Bearer <token>`` (see ``config.api_token``): call data
    goes by credential, never by address, which a same-host proxy or X-Forwarded-For fakes."""
    runtime = runtime_of(connection)
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    if (scheme.lower() == "bearer" and runtime.api_token
            and hmac.compare_digest(given.strip().encode(), runtime.api_token.encode())):
        return
    runtime.refusals.warning("api", "%r: missing or wrong API token; refused",
                             connection.url.path[:80])
    raise NotAuthorizedException(
        "send Authorization: Bearer <token>, the token being APPLIANCE_API_TOKEN or, when that "
        "is unset, the contents of <data dir>/local-api-token",
        headers={"WWW-Authenticate": "Bearer"})


@get("/api/calls/{call_sid:str}", guards=[api_guard])
async def call_record(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> Response[Any]:
    """One call's log (turns, metrics, events), for the simulated caller and local tools."""
    record = await runtime_of(request).store.call_record(call_sid)
    if record is None:
        return Response({"error": "no such call"}, status_code=404)
    return Response(record)


@get("/api/metrics", guards=[api_guard])
async def metrics(request: Request[Any, Any, Any], reset: FromQuery[bool] = False) -> Response[Any]:
    """Event-loop lag and live call count, for the benchmark."""
    runtime = runtime_of(request)
    body = {"loop_lag": runtime.loop_lag.stats(), "active_calls": len(runtime.calls.active),
            "slots_used": runtime.calls.count(), "refused_sockets": dict(runtime.refused),
            "pid": os.getpid()}
    if runtime.engines is not None and (tokens := token_counts(runtime.engines.agent.llm)):
        body["llm_tokens"] = tokens  # from the model server, when it reports them
    if reset:
        runtime.loop_lag.reset()
    return Response(body)


async def _repair_recordings(runtime: Runtime) -> None:
    """Recordings a crash left unfinished, made whole before calls come in (only those are
    decoded: a finished file costs a header read)."""
    repaired = await asyncio.to_thread(runtime.recordings.repair_all)
    for call_sid, seconds in repaired.items():
        await runtime.store.update_call(call_sid, recording_s=round(seconds, 2))


def create_app(settings: Settings, load_engines: EngineLoader) -> Litestar:
    """Build the app. Models load in the background after start-up so /healthz can report it."""
    runtime = Runtime.create(settings)
    runtime.cluster = cluster_from_settings(
        settings, lambda: runtime.draining or runtime.engines is None)
    if runtime.cluster is not None:
        runtime.calls = runtime.cluster.slots
        runtime.cluster_live = ClusterLive(runtime.cluster, runtime)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.store.open()
        await _repair_recordings(runtime)
        if runtime.cluster is not None:
            await runtime.cluster.start()
        if runtime.cluster_live is not None:
            await runtime.cluster_live.start()
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
            if runtime.cluster_live is not None:
                await runtime.cluster_live.stop()
            if runtime.cluster is not None:
                await runtime.cluster.stop()
            await runtime.store.close()

    app = Litestar(
        route_handlers=[healthz, voice, status_callback, media_socket, relay_socket,
                        relay_action, call_record, metrics],
        lifespan=[lifespan],
        on_app_init=[console.on_app_init],
        logging_config=None,  # logging is set up once by the CLI, with secret scrubbing
        debug=False,
        openapi_config=None,  # no /schema: the routes are Twilio's and ours, not a public API
        request_max_body_size=WEBHOOK_MAX_BYTES,
        middleware=[host_allow_list(allowed_hosts(settings), runtime.refusals)],
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
    if runtime.cluster is not None:
        runtime.cluster.changed()  # ready: take calls from the pool now
    log.info("ready: %s", ", ".join(f"{m.slot}={m.name}" for m in runtime.models))
