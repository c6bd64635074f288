"""The console's server-rendered pages (``/console``), on the same services as the JSON API."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from litestar import MediaType, Request, Response, Router, get, post
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import FromPath, FromQuery
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import File, Redirect, Template

from appliance.console import queries, services
from appliance.console.api import recording_response
from appliance.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    access_guard,
    clear_cookie,
    client_address,
    cookie,
    principal_of,
    safe_next,
)
from appliance.console.state import console_of
from appliance.kb import KbError

ADMIN = {"role": "admin"}
TEMPLATES = Path(__file__).parent / "templates"


def latency_bar(m: dict[str, Any]) -> list[tuple[str, str, float]]:
    """A turn's wait as consecutive segments (css class, label, seconds). The session measures
    the LLM's first token and first sentence both from the LLM's start, so the sentence segment
    is the difference."""
    ttft = m.get("llm_ttft_s") or 0.0
    sentence = max((m.get("first_sentence_s") or ttft) - ttft, 0.0)
    parts = (("endpoint_s", "end of turn", m.get("endpoint_s")), ("stt_s", "STT", m.get("stt_s")),
             ("llm_ttft_s", "LLM first token", ttft), ("first_sentence_s", "sentence", sentence),
             ("tts_first_audio_s", "TTS first audio", m.get("tts_first_audio_s")))
    return [(key, label, float(v)) for key, label, v in parts if v]


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "–"


def _context(request: Request[Any, Any, Any], context: dict[str, Any]) -> dict[str, Any]:
    principal = getattr(request.state, "principal", None)
    return {"me": principal, "csrf": principal.csrf if principal else "",
            "business": console_of(request).settings.business_name,
            "message": request.query_params.get("msg", ""), **context}


def render(request: Request[Any, Any, Any], name: str, **context: Any) -> Template:
    """A page rendered by Litestar on the event loop: for the login and error pages only."""
    return Template(template_name=name, context=_context(request, context))


async def html_page(request: Request[Any, Any, Any], name: str, **context: Any) -> Response[str]:
    """A console page rendered in a worker thread, not on the event loop the calls share.

    With two viewers reloading the Live page and the calls list every 2 s beside four calls,
    the server's loop-lag p99 went from 1.2 to 2.5 ms when Litestar rendered them on the loop
    (`appliance bench --console-watchers 2`); Jinja renders a prepared template safely from
    any thread."""
    engine = request.app.template_engine
    assert isinstance(engine, JinjaTemplateEngine)
    values = _context(request, context)
    html = await asyncio.to_thread(lambda: engine.get_template(name).render(values))
    return Response(html, media_type=MediaType.HTML)


def back(url: str, message: str) -> Redirect:
    sep = "&" if "?" in url else "?"
    return Redirect(f"{url}{sep}{urlencode({'msg': message})}", status_code=303)


# --- login / logout (the only pages without the guard) ----------------------------------------

def login_page(request: Request[Any, Any, Any], error: str = "", status: int = 200,
               next_: str = "") -> Template:
    token = secrets.token_urlsafe(24)
    template = render(request, "login.html", error=error, login_csrf=token,
                    next=safe_next(next_ or request.query_params.get("next", "")))
    template.status_code = status
    template.cookies.append(cookie(console_of(request).settings, LOGIN_CSRF_COOKIE, token, 900,
                                   path="/console/login"))
    return template


@get("/login")
async def login_form(request: Request[Any, Any, Any]) -> Template:
    return login_page(request)


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Double-submit CSRF (no session yet), then rate limit, then the password check."""
    console = console_of(request)
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    next_ = str(form.get("next", ""))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(str(form.get("_csrf", "")), expected):
        return login_page(request, "The form expired: please try again.", 403, next_)
    address = client_address(request)
    if wait := console.limiter.retry_after(address, username):
        return login_page(request, f"Too many failed attempts: try again in {int(wait) + 1} s.",
                          429, next_)
    user = await console.accounts(lambda a: a.verify_password(username, password))
    if user is None:
        console.limiter.failed(address, username)
        await console.accounts(lambda a: a.audit(username or "?", "login.failed", address))
        return login_page(request, "Wrong user name or password.", 401, next_)
    console.limiter.succeeded(address, username)
    lifetime = console.settings.console_session_hours * 3600
    secret = await console.accounts(lambda a: a.open_session(user.username, lifetime))
    await console.accounts(lambda a: a.audit(user.username, "login", address))
    response = Redirect(safe_next(next_), status_code=303)
    response.cookies.append(cookie(console.settings, SESSION_COOKIE, secret, int(lifetime)))
    clear_cookie(response, console.settings, LOGIN_CSRF_COOKIE)
    return response


@post("/logout", guards=[access_guard], status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    console = console_of(request)
    if secret := request.cookies.get(SESSION_COOKIE):
        await console.accounts(lambda a: a.close_session(secret))
        console.logged_out(secret)
    response = Redirect("/console/login", status_code=303)
    clear_cookie(response, console.settings, SESSION_COOKIE)
    return response


# --- pages ------------------------------------------------------------------------------------

@get("/", guards=[access_guard])
async def home() -> Redirect:
    return Redirect("/console/calls")


@get("/calls", guards=[access_guard])
async def calls_page(request: Request[Any, Any, Any], number: FromQuery[str] = "",
                     date_from: FromQuery[date | None] = None,
        date_to: FromQuery[date | None] = None, q: FromQuery[str] = "",
                     flag: FromQuery[list[str] | None] = None,
                     page: FromQuery[int] = 1) -> Response[str]:
    try:
        f = services.call_filter(number, date_from, date_to, q, flag, page)
    except ValueError as err:
        raise ValidationException(str(err)) from err
    query = {"number": number, "date_from": date_from or "", "date_to": date_to or "", "q": q,
             "flag": list(f.flags)}
    query_string = urlencode({k: v for k, v in query.items() if v}, doseq=True)
    result = await services.calls(console_of(request), f)
    return await html_page(request, "calls.html", nav="calls", result=result, query=query,
                query_string=query_string, flags=list(queries.FLAGS))


@get("/calls/{call_sid:str}", guards=[access_guard])
async def call_page(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> Response[str]:
    try:
        detail = await services.call(console_of(request), call_sid)
    except services.NotFound as err:
        raise NotFoundException(str(err)) from err
    for turn in detail["turns"]:
        turn["bar"] = latency_bar(turn["metrics"]) if turn["metrics"] else []
    scale = max([sum(part[2] for part in t["bar"]) for t in detail["turns"]] + [0.001])
    playable = detail["recording"] is not None and services.may_play_recordings(
        console_of(request), principal_of(request))
    recording = f"/console/calls/{call_sid}/recording" if playable else None
    return await html_page(request, "call.html", nav="calls", d=detail, scale=scale,
                           recording=recording)


@get("/calls/{call_sid:str}/recording", guards=[access_guard])
async def call_recording(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> File:
    return recording_response(request, call_sid)


@get("/live", guards=[access_guard])
async def live_page(request: Request[Any, Any, Any]) -> Response[str]:
    return await html_page(request, "live.html", nav="live")


@get("/insights", guards=[access_guard])
async def insights_page(request: Request[Any, Any, Any],
                        days: FromQuery[int] = 14) -> Response[str]:
    try:
        data = await services.insights(console_of(request), days)
    except ValueError as err:
        raise ValidationException(str(err)) from err
    return await html_page(request, "insights.html", nav="insights", i=data, days=days)


@post("/insights/answer", guards=[access_guard], opt=ADMIN, status_code=303)
async def insights_answer(request: Request[Any, Any, Any]) -> Redirect:
    form = await request.form()
    question, answer = str(form.get("question", "")), str(form.get("answer", ""))
    days = str(form.get("days", ""))
    target = f"/console/insights?days={days}" if days.isdigit() else "/console/insights"
    try:
        result = await services.add_answer(console_of(request), principal_of(request),
                                           question, answer)
    except KbError as err:
        return back(target, f"answer refused: {err}")
    return back(target, f"added {result['path']}: {result['summary']}")


@get("/kb", guards=[access_guard], opt=ADMIN)
async def kb_page(request: Request[Any, Any, Any]) -> Response[str]:
    docs = await console_of(request).kb.documents()
    return await html_page(request, "kb.html", nav="kb", docs=docs)


@post("/kb/upload", guards=[access_guard], opt=ADMIN, status_code=303)
async def kb_upload(request: Request[Any, Any, Any]) -> Redirect:
    upload = (await request.form()).get("file")
    if upload is None or not hasattr(upload, "read"):
        return back("/console/kb", "choose a file to upload")
    try:
        result = await services.kb_upload(console_of(request), principal_of(request),
                                          upload.filename, await upload.read())
    except KbError as err:
        return back("/console/kb", f"upload refused: {err}")
    return back("/console/kb", f"{upload.filename}: {result['summary']}")


@post("/kb/delete", guards=[access_guard], opt=ADMIN, status_code=303)
async def kb_delete(request: Request[Any, Any, Any]) -> Redirect:
    path = str((await request.form()).get("path", ""))
    try:
        removed = await services.kb_remove(console_of(request), principal_of(request), path)
    except services.NotFound as err:
        return back("/console/kb", str(err))
    return back("/console/kb", f"removed {', '.join(removed)}")


@post("/kb/reingest", guards=[access_guard], opt=ADMIN, status_code=303)
async def kb_reingest(request: Request[Any, Any, Any]) -> Redirect:
    summary = await services.kb_reingest(console_of(request), principal_of(request))
    return back("/console/kb", summary)


@get("/system", guards=[access_guard], opt=ADMIN)
async def system_page(request: Request[Any, Any, Any]) -> Response[str]:
    system = await services.system(console_of(request))
    return await html_page(request, "system.html", nav="system", s=system)


@get("/audit", guards=[access_guard], opt=ADMIN)
async def audit_page(request: Request[Any, Any, Any]) -> Response[str]:
    rows = await console_of(request).accounts(lambda a: a.audit_log())
    return await html_page(request, "audit.html", nav="audit", rows=rows)


# --- errors -----------------------------------------------------------------------------------

def to_login(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/console/login?{urlencode({'next': target})}")


def error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    template = render(request, "error.html", status=exc.status_code, detail=exc.detail)
    template.status_code = exc.status_code
    return template


def pages_router() -> Router:
    return Router("/console", include_in_schema=False, route_handlers=[
        login_form, login, logout, home, calls_page, call_page, call_recording, live_page,
        insights_page, insights_answer, kb_page, kb_upload, kb_delete, kb_reingest, system_page,
        audit_page],
        exception_handlers={NotAuthorizedException: to_login,
                            PermissionDeniedException: error_page,
                            NotFoundException: error_page, ValidationException: error_page})
