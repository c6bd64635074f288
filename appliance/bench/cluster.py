"""Scale-out measured: N boxes sharing one model server versus one box with in-process models.

``appliance bench --cluster N`` runs the same calls twice on this machine, one setup after the
other (never side by side, so neither steals the other's CPU):

1. *cluster*: one model server (``python -m llama_cpp.server`` on the same GGUF, context and
   thread counts as the in-process engine), a Chroma server, a fresh schema of the given
   PostgreSQL, a fresh key prefix on the given Redis, and N ``appliance serve`` boxes with
   ``max_calls`` each just enough for the largest level; every call rings box A's webhook, so
   once A is full the calls are handed to the box with room, as behind one phone number. Each
   box is warmed by one call of its own first.
2. *one box*: ``appliance serve`` alone with every model in-process, as ``appliance bench``
   runs it.

Both answer generatively (``answer_style = "generative"``): the default extractive answers never
ask the model, so the model server would not be on the path this compares. Speech-to-text stays
in-process on every box (the project ships no transcription server to start). With the boxes
still up, ``bench/llm_hop.py`` then times the first token of short prompts alternately in-process
and on the model server: the hop alone, without queueing for the shared server.

Every process is stopped, the schema dropped and the Redis keys deleted at the end, also on an
error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import shutil
import signal
import string
import tempfile
import threading
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from appliance.bench import llm_hop, probes, services
from appliance.bench.runner import (
    BenchError,
    BenchOptions,
    Server,
    load_lines,
    measure,
    serve_process,
    server_settings,
    spawned_server,
)
from appliance.config import Settings
from appliance.models.resolve import resolve_models

log = logging.getLogger(__name__)

SCHEMA = "appliance-bench-cluster/1"
MODEL_ALIAS = "bench"
FALLBACK_LOG = "answering in-process"  # a box's warning when the model server failed a reply


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    boxes: int = 2
    database_url: str = ""  # PostgreSQL: a fresh schema of it is used, then dropped
    redis_url: str = ""  # Redis: a fresh key prefix on it is used, then deleted
    capacity: int | None = None  # calls per box; default: the largest level spread over boxes
    hop_prompts: int = 20  # first-token pairs for the hop alone; 0 skips it
    logs: Path | None = None  # keep every server's log here (they go with the temp dir)

    def per_box(self, opts: BenchOptions) -> int:
        return self.capacity or math.ceil(max(opts.calls) / self.boxes)


def box_names(count: int) -> list[str]:
    return [f"box-{string.ascii_lowercase[i]}" for i in range(count)]


def cluster_settings(settings: Settings, opts: BenchOptions, copts: ClusterOptions,
                     shared: dict[str, str], workdir: Path) -> list[Settings]:
    """Each box's settings: the bench's own server settings (fresh data dir and port), the
    shared servers, one signing and API token for all (a handed-off call opens its socket on
    another box, and its record is read back from box A)."""
    first: Settings | None = None
    boxes = []
    for name in box_names(copts.boxes):
        data = workdir / name
        data.mkdir()
        child = server_settings(settings, data, services.free_port(), opts)
        if first is None:
            first = msgspec.structs.replace(
                child, api_token=settings.api_token or secrets.token_hex(24))
        child = msgspec.structs.replace(
            child, twilio_auth_token=first.twilio_auth_token,
            twilio_account_sid=first.twilio_account_sid, api_token=first.api_token,
            max_calls=copts.per_box(opts), answer_style="generative", llm_backend="openai",
            llm_server_model=MODEL_ALIAS, box_id=name, **shared)
        boxes.append(child)
    return boxes


def one_box_settings(settings: Settings) -> Settings:
    """The baseline: every model in-process, nothing shared, the same generative answers."""
    return msgspec.structs.replace(
        settings, answer_style="generative", llm_backend="in-process", stt_backend="in-process",
        database_url="", kb_url="", redis_url="")


def keep_logs(work: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in work.glob("*.log"):
        shutil.copy(path, dest / path.name)


def fallbacks(servers: list[Server]) -> int:
    """Replies the boxes' logs say the model server failed (each box warns once per outage)."""
    total = 0
    for server in servers:
        if server.log_path is not None and server.log_path.exists():
            total += server.log_path.read_text(errors="replace").count(FALLBACK_LOG)
    return total


async def run_cluster(settings: Settings, opts: BenchOptions, copts: ClusterOptions,
                      lines: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Setup 1 (see the module doc): its result, and the hop measurement."""
    llm = resolve_models(settings).llm
    with tempfile.TemporaryDirectory(prefix="appliance-cluster-") as tmp, ExitStack() as shared:
        work = Path(tmp)
        if copts.logs is not None:  # copied out last, after every server has stopped
            shared.callback(keep_logs, work, copts.logs)
        log.info("starting the model server and the Chroma server")
        model = shared.enter_context(services.model_server(
            work, llm, alias=MODEL_ALIAS, threads=settings.llm_threads,
            batch_threads=settings.llm_batch_threads, n_ctx=settings.llm_context))
        # A model server is long-running: its first reply pays for paging the model in.
        await asyncio.to_thread(llm_hop.warm, model.url, MODEL_ALIAS)
        kb_url = shared.enter_context(services.chroma_server(work))
        database_url = shared.enter_context(services.postgres_schema(copts.database_url))
        cluster_name = shared.enter_context(services.redis_namespace(copts.redis_url))
        children = cluster_settings(settings, opts, copts, {
            "llm_url": model.url, "kb_url": kb_url, "database_url": database_url,
            "redis_url": copts.redis_url, "cluster_name": cluster_name}, work)
        async with AsyncExitStack() as boxes:
            servers = []
            for child in children:  # one after another: box A fills the empty Chroma first
                log.info("starting %s (%d call slots)", child.box_id, child.max_calls)
                servers.append(await boxes.enter_async_context(
                    serve_process(child, work, opts.ready_timeout_s, name=child.box_id)))
            result = await measure(servers[0], opts, lines, also_warm=servers[1:])
            result["boxes"] = [{"box": s.settings.box_id, "url": s.base_url, "pid": s.pid,
                                "max_calls": s.settings.max_calls} for s in servers]
            result["model_server"] = {
                "command": "python -m llama_cpp.server", "model": llm.name,
                "threads": settings.llm_threads, "batch_threads": settings.llm_batch_threads,
                "n_ctx": settings.llm_context, "pid": model.proc.pid,
                "chat_requests": model.chat_requests()}
            result["llm_fallbacks"] = fallbacks(servers)
            hop = None
            if copts.hop_prompts:
                log.info("the hop alone: %d first tokens each way", copts.hop_prompts)
                hop = await asyncio.to_thread(
                    llm_hop.compare, model.url, MODEL_ALIAS, copts.hop_prompts,
                    settings.llm_threads, settings.llm_batch_threads, settings.llm_context)
    return result, hop


async def run_cluster_bench(settings: Settings, opts: BenchOptions,
                            copts: ClusterOptions) -> dict[str, Any]:
    """Both setups on the same calls; the JSON-able result (``report.cluster_table`` prints it).
    """
    if copts.boxes < 2:
        raise BenchError("--cluster needs at least 2 boxes")
    if not copts.database_url or not copts.redis_url:
        raise BenchError("--cluster needs PostgreSQL and Redis for the boxes to share: pass "
                         "--database-url and --redis-url (or set APPLIANCE_DATABASE_URL and "
                         "APPLIANCE_REDIS_URL); nothing was started")
    if opts.url:
        raise BenchError("--cluster starts its own boxes: leave out --url")
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    handle = main is not None and threading.current_thread() is threading.main_thread()
    if handle and main is not None:  # SIGTERM ends the run as Ctrl-C does: servers stopped first
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        return await _both_setups(settings, opts, copts)
    finally:
        if handle:
            loop.remove_signal_handler(signal.SIGTERM)


async def _both_setups(settings: Settings, opts: BenchOptions,
                       copts: ClusterOptions) -> dict[str, Any]:
    lines = await load_lines(settings, opts)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": probes.machine_info(),
        "options": {"calls": list(opts.calls), "turns": opts.turns, "boxes": copts.boxes,
                    "capacity": copts.per_box(opts), "hop_prompts": copts.hop_prompts,
                    "answer_style": "generative"},
    }
    try:
        cluster, hop = await run_cluster(settings, opts, copts, lines)
    except services.ServiceError as err:
        raise BenchError(str(err)) from err
    log.info("the same calls on one box with in-process models")
    with tempfile.TemporaryDirectory(prefix="appliance-onebox-") as tmp:
        # An empty data dir: it ingests kb_dir, as box A did into the Chroma server.
        baseline = msgspec.structs.replace(one_box_settings(settings), data_dir=tmp)
        async with spawned_server(baseline, opts) as server:
            one_box = await measure(server, opts, lines)
    result["setups"] = {"cluster": cluster, "one_box": one_box}
    result["llm_hop"] = hop
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result
