"""What the pages and the JSON API both show: one function per view, so they never disagree."""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from datetime import date
from pathlib import Path
from typing import Any

from appliance.auth import Principal
from appliance.bench import probes
from appliance.console import insights as insight
from appliance.console import queries
from appliance.console.kbadmin import answer_path
from appliance.console.metrics import InMemory
from appliance.console.state import Console
from appliance.kb import KbError
from appliance.web.runtime import ActionRefused


class NotFound(LookupError):
    pass


class Refused(RuntimeError):
    """An operator action that cannot be done now; the message says why."""


class NotAllowed(PermissionError):
    """This principal's role may not see that (the message says which setting would allow)."""


def call_filter(number: str = "", date_from: date | None = None, date_to: date | None = None,
                q: str = "", flag: list[str] | None = None, page: int = 1,
                per_page: int = 25) -> queries.CallFilter:
    flags = tuple(f for f in (flag or []) if f)
    unknown = [f for f in flags if f not in queries.FLAGS]
    if unknown:
        raise ValueError(f"unknown filter {unknown[0]!r}: use {', '.join(queries.FLAGS)}")
    return queries.CallFilter(number=number.strip(), date_from=date_from, date_to=date_to,
                              words=q.strip(), flags=flags, page=max(1, page),
                              per_page=min(max(1, per_page), 200))


async def calls(console: Console, f: queries.CallFilter) -> dict[str, Any]:
    return await queries.search_calls(console.call_log, f)


async def calls_csv(console: Console, f: queries.CallFilter) -> str:
    return await queries.calls_csv(console.call_log, f)


async def call(console: Console, call_sid: str) -> dict[str, Any]:
    detail = await queries.call_detail(console.call_log, call_sid)
    if detail is None:
        raise NotFound(f"no call {call_sid}")
    ids = [s["id"] for t in detail["turns"] for s in t["sources"]]
    described = await console.kb.describe(sorted(set(ids)))
    for turn in detail["turns"]:
        turn["sources"] = [dict(s, **described.get(s["id"], {})) for s in turn["sources"]]
    detail["recording"] = await recording_info(console, call_sid)
    return detail


async def recording_info(console: Console, call_sid: str) -> dict[str, Any] | None:
    """The call's recording on this box, if any: its length (None while still recording)."""
    recordings = console.runtime.recordings
    if recordings.find(call_sid) is None:
        return None
    return {"seconds": await asyncio.to_thread(recordings.seconds, call_sid)}


def may_play_recordings(console: Console, principal: Principal) -> bool:
    """Admins always; viewers when ``viewer_recordings`` allows it."""
    return principal.is_admin or console.settings.viewer_recordings


def recording_file(console: Console, principal: Principal, call_sid: str) -> Path:
    """The FLAC to serve; :class:`NotAllowed` or :class:`NotFound` otherwise."""
    if not may_play_recordings(console, principal):
        raise NotAllowed("recordings are for admins (APPLIANCE_VIEWER_RECORDINGS=1 lets viewers "
                         "play them)")
    if (path := console.runtime.recordings.find(call_sid)) is None:
        raise NotFound(f"no recording of call {call_sid[:40]}")
    return path


async def live(console: Console) -> list[dict[str, Any]]:
    """Calls in progress: caller, duration, state and the transcript so far, from the live feed
    (what the Live page's stream starts with), with the caller's number from the call log."""
    calls = console.runtime.live.snapshot()
    return await with_callers(console, calls)


async def with_callers(console: Console, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``calls`` (live-feed entries) with ``from_number`` and ``duration_s`` added."""
    sids = [c["call_sid"] for c in calls]
    info = await queries.calls_info(console.call_log, sids) if sids else {}
    now = time.time()
    return [{**c, "from_number": info.get(c["call_sid"], {}).get("from_number", ""),
             "duration_s": round(now - c["started"], 1)} for c in calls]


async def live_action(console: Console, principal: Principal, call_sid: str,
                      action: str) -> None:
    """Hang up or transfer a live call, as the agent's own tools would; in a cluster, a call
    another box holds is forwarded to that box (``web.cluster_live``)."""
    runtime, others = console.runtime, console.runtime.cluster_live
    if call_sid in runtime.sessions:
        act = runtime.act
    elif others is not None and others.holder(call_sid) is not None:
        act = others.act
    else:
        raise NotFound(f"no live call {call_sid}")
    try:
        await act(call_sid, action)
    except LookupError as err:
        raise NotFound(str(err)) from err
    except ActionRefused as err:
        raise Refused(str(err)) from err
    finally:
        await console.accounts(lambda a: a.audit(principal.name, f"call.{action}", call_sid))


def app_version() -> str:
    try:
        return importlib.metadata.version("appliance")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


async def system(console: Console) -> dict[str, Any]:
    """Health for the System page: models, loop lag, the fail-over breakers (``tts``/``llm``,
    only those configured with a fail-over) and GPU memory (None without nvidia-smi)."""
    runtime = console.runtime
    breakers = {slot: state.value for slot, state in InMemory.of(runtime).breakers.items()}
    gpus = await asyncio.to_thread(probes.gpu_memory)
    status = "ready" if runtime.engines else ("failed" if runtime.load_error else "loading")
    return {
        "version": app_version(),
        "status": "draining" if runtime.draining else status,
        "load_error": runtime.load_error,
        "models": [{"slot": m.slot, "name": m.name, "version": m.version, "device": m.device}
                   for m in runtime.models],
        "active_calls": len(runtime.calls.active),
        "max_calls": console.settings.max_calls,
        "loop_lag": runtime.loop_lag.stats(),
        "breakers": breakers,
        "gpus": gpus,
        "settings": console.settings.redacted(),
    }


async def kb_upload(console: Console, principal: Principal, filename: str,
                    data: bytes) -> dict[str, Any]:
    result = await console.kb.upload(filename, data)
    await console.accounts(lambda a: a.audit(principal.name, "kb.upload", filename))
    return result


async def kb_remove(console: Console, principal: Principal, path: str) -> list[str]:
    removed = await console.kb.remove(path)
    if not removed:
        raise NotFound(f"nothing ingested from {path}")
    await console.accounts(lambda a: a.audit(principal.name, "kb.remove", path))
    return removed


async def kb_reingest(console: Console, principal: Principal) -> str:
    summary = await console.kb.reingest()
    await console.accounts(lambda a: a.audit(principal.name, "kb.reingest", "", summary=summary))
    return summary


MAX_INSIGHT_DAYS = 90


async def insights(console: Console, days: int = 14) -> dict[str, Any]:
    """Per-day call numbers and the grouped questions the knowledge base could not answer;
    ``answered_at``: when an answer to the group's question was last added here, if ever."""
    if not 1 <= days <= MAX_INSIGHT_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_INSIGHT_DAYS}")
    data = await insight.insights(console.call_log, console.embedder(), days)

    def answered() -> None:  # a file check per group, off the loop
        for group in data["unanswered"]:
            path = answer_path(console.settings, group["question"])
            group["answered_at"] = path.stat().st_mtime if path.is_file() else None
    await asyncio.to_thread(answered)
    return data


async def add_answer(console: Console, principal: Principal, question: str,
                     answer: str) -> dict[str, Any]:
    """An operator's answer to an unanswered question, in the KB and answering at once."""
    result = await console.kb.add_answer(question, answer)
    await console.accounts(lambda a: a.audit(principal.name, "kb.answer", question.strip()[:200],
                                             path=result["path"]))
    return result


__all__ = ["KbError", "NotAllowed", "NotFound", "Refused"]
