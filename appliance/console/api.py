"""The JSON API (``/api/v1``): the console's data for scripts and CRMs, behind a session or an
API token (``Authorization: Bearer apl_…``), described in the OpenAPI schema at ``/api/schema``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import Body, FromPath, FromQuery
from litestar.response import File

from appliance.console import services
from appliance.console.live_stream import live_stream
from appliance.console.security import access_guard, principal_of
from appliance.console.state import console_of
from appliance.kb import KbError

ADMIN = {"role": "admin"}
RECORDING_TYPE = "audio/flac"


class Question(msgspec.Struct):
    question: str


class Answer(msgspec.Struct):
    question: str
    answer: str


class DocumentRef(msgspec.Struct):
    path: str


class Upload(msgspec.Struct):
    file: UploadFile


def _filter(number: str, date_from: date | None, date_to: date | None, q: str,
            flag: list[str] | None, page: int, per_page: int) -> Any:
    try:
        return services.call_filter(number, date_from, date_to, q, flag, page, per_page)
    except ValueError as err:
        raise ValidationException(str(err)) from err


@get("/calls", summary="Search calls")
async def list_calls(request: Request[Any, Any, Any], number: FromQuery[str] = "",
                     date_from: FromQuery[date | None] = None,
        date_to: FromQuery[date | None] = None, q: FromQuery[str] = "",
                     flag: FromQuery[list[str] | None] = None, page: FromQuery[int] = 1,
                     per_page: FromQuery[int] = 25) -> dict[str, Any]:
    """Newest first. ``flag`` (repeatable): transferred, declined, errors, abandoned,
    barge_ins. ``q``: words the caller or the agent said."""
    f = _filter(number, date_from, date_to, q, flag, page, per_page)
    return await services.calls(console_of(request), f)


@get("/export/calls.csv", summary="Export calls as CSV", media_type="text/csv")
async def export_calls(request: Request[Any, Any, Any], number: FromQuery[str] = "",
                       date_from: FromQuery[date | None] = None,
        date_to: FromQuery[date | None] = None, q: FromQuery[str] = "",
                       flag: FromQuery[list[str] | None] = None) -> Response[str]:
    f = _filter(number, date_from, date_to, q, flag, 1, 25)
    body = await services.calls_csv(console_of(request), f)
    return Response(body, media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="calls.csv"'})


@get("/calls/{call_sid:str}", summary="One call: turns, heard text, sources, metrics, events")
async def call_detail(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> dict[str, Any]:
    try:
        return await services.call(console_of(request), call_sid)
    except services.NotFound as err:
        raise NotFoundException(str(err)) from err


@get("/calls/{call_sid:str}/recording", summary="The call's recording: stereo FLAC, caller "
     "left, agent right (admins; viewers when APPLIANCE_VIEWER_RECORDINGS=1)")
async def call_recording(request: Request[Any, Any, Any], call_sid: FromPath[str]) -> File:
    return recording_response(request, call_sid)


def recording_response(request: Request[Any, Any, Any], call_sid: str) -> File:
    """The recording as ``audio/flac``, never cached (it is a caller's voice); 403 for a role
    without access, 404 without a recording on this box."""
    try:
        path = services.recording_file(console_of(request), principal_of(request), call_sid)
    except services.NotAllowed as err:
        raise PermissionDeniedException(str(err)) from err
    except services.NotFound as err:
        raise NotFoundException(str(err)) from err
    return File(path, media_type=RECORDING_TYPE, filename=path.name,
                content_disposition_type="inline",
                headers={"Cache-Control": "private, no-store"})


@get("/live", summary="Calls in progress with their transcripts so far")
async def live_calls(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    return await services.live(console_of(request))


@post("/live/{call_sid:str}/{action:str}", opt=ADMIN, status_code=200,
      summary="Hang up or transfer a live call (admin)")
async def live_action(request: Request[Any, Any, Any], call_sid: FromPath[str],
                      action: FromPath[str]) -> dict[str, str]:
    if action not in ("hangup", "transfer"):
        raise NotFoundException("action is hangup or transfer")
    try:
        await services.live_action(console_of(request), principal_of(request), call_sid, action)
    except services.NotFound as err:
        raise NotFoundException(str(err)) from err
    except services.Refused as err:
        raise ClientException(str(err), status_code=409) from err
    return {"status": "ok"}


@get("/insights", summary="Calls per day and the questions the knowledge base could not answer")
async def insights(request: Request[Any, Any, Any], days: FromQuery[int] = 14) -> dict[str, Any]:
    """Per day: calls, duration mean/median, voice-to-voice p50/p95, transfer and decline rates.
    ``unanswered``: the declined questions grouped by meaning, most asked first."""
    try:
        return await services.insights(console_of(request), days)
    except ValueError as err:
        raise ValidationException(str(err)) from err


@post("/insights/answers", opt=ADMIN, status_code=201,
      summary="Answer an unanswered question: a new KB entry, ingested at once (admin)")
async def add_answer(request: Request[Any, Any, Any],
                     data: Annotated[Answer, Body()]) -> dict[str, Any]:
    try:
        return await services.add_answer(console_of(request), principal_of(request),
                                         data.question, data.answer)
    except KbError as err:
        raise ValidationException(str(err)) from err


@get("/kb/documents", opt=ADMIN, summary="Knowledge-base documents and chunk counts (admin)")
async def kb_documents(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    return await console_of(request).kb.documents()


@post("/kb/documents", opt=ADMIN, status_code=201, summary="Upload or replace a document")
async def kb_upload(request: Request[Any, Any, Any],
                    data: Annotated[Upload, Body(media_type=RequestEncodingType.MULTI_PART)]
                    ) -> dict[str, Any]:
    try:
        return await services.kb_upload(console_of(request), principal_of(request),
                                        data.file.filename, await data.file.read())
    except KbError as err:
        raise ValidationException(str(err)) from err


@post("/kb/documents/delete", opt=ADMIN, status_code=200, summary="Forget a document")
async def kb_delete(request: Request[Any, Any, Any],
                    data: Annotated[DocumentRef, Body()]) -> dict[str, Any]:
    try:
        removed = await services.kb_remove(console_of(request), principal_of(request), data.path)
    except services.NotFound as err:
        raise NotFoundException(str(err)) from err
    return {"removed": removed}


@post("/kb/reingest", opt=ADMIN, status_code=200, summary="Re-read kb_dir and the uploads")
async def kb_reingest(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {"summary": await services.kb_reingest(console_of(request), principal_of(request))}


@post("/kb/ask", opt=ADMIN, status_code=200, summary="Try a question: what `appliance ask` runs")
async def kb_ask(request: Request[Any, Any, Any],
                 data: Annotated[Question, Body()]) -> dict[str, Any]:
    try:
        return await console_of(request).kb.ask(data.question)
    except KbError as err:
        raise ClientException(str(err), status_code=409) from err


@get("/system", opt=ADMIN, summary="Health, version and effective settings (secrets redacted)")
async def system(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await services.system(console_of(request))


@get("/audit", opt=ADMIN, summary="Admin actions, newest first")
async def audit(request: Request[Any, Any, Any],
                limit: FromQuery[int] = 200) -> list[dict[str, Any]]:
    return await console_of(request).accounts(lambda a: a.audit_log(min(max(limit, 1), 1000)))


@get("/me", summary="Who this request is authenticated as")
async def me(request: Request[Any, Any, Any]) -> dict[str, str]:
    p = principal_of(request)
    return {"name": p.name, "role": p.role, "via": p.via}


def api_router() -> Router:
    return Router("/api/v1", guards=[access_guard], tags=["console"], route_handlers=[
        list_calls, export_calls, call_detail, call_recording, live_calls, live_stream,
        live_action, insights, add_answer, kb_documents, kb_upload, kb_delete, kb_reingest, kb_ask,
        system, audit, me])

