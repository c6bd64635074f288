"""Knowledge-base management for the console: list, upload, delete, re-ingest, try a question.

Edits run in this process, on the same on-disk Chroma database the agent searches, so a
document uploaded here answers the next question with no restart (Chroma shares one index per
path within a process; it is another process's writes that a running server does not see).
Uploads are kept under ``<data_dir>/kb-uploads``, answers written on the Insights page under
``<kb_dir>/answers``; documents from ``kb_dir`` are re-read by "re-ingest". Every Chroma and
ONNX call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.kb import KbError
from appliance.kb.loaders import supported
from appliance.web.runtime import Runtime

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")
SLUG = re.compile(r"[^a-z0-9]+")
ANSWERS_DIR = "answers"  # under kb_dir: operators' answers from the Insights page
MAX_QUESTION, MAX_ANSWER = 300, 4000


def uploads_dir(settings: Settings) -> Path:
    return settings.data_path / "kb-uploads"


def upload_path(settings: Settings, filename: str) -> Path:
    """A plain file name inside the uploads folder; refuses types the loaders cannot read."""
    name = SAFE_NAME.sub("_", Path(filename.replace("\\", "/")).name).strip(" .")
    if not name:
        raise KbError("the upload has no file name")
    path = uploads_dir(settings) / name
    if not supported(path):
        raise KbError(f"unsupported file type {path.suffix or '(none)'}: use .md, .txt, .html "
                      "or .pdf")
    return path


def _heading(question: str) -> str:
    question = " ".join(question.split()).lstrip("#").strip()
    return question if not question or question.endswith("?") else f"{question}?"


def answer_path(settings: Settings, question: str) -> Path:
    """``<kb_dir>/answers/<slug>.md``: the one file an answer to ``question`` goes in."""
    slug = SLUG.sub("-", _heading(question).lower()).strip("-")[:60].strip("-") or "answer"
    return Path(settings.kb_dir) / ANSWERS_DIR / f"{slug}.md"


def answer_entry(settings: Settings, question: str, answer: str) -> tuple[Path, str]:
    """Where an operator's answer to ``question`` goes, and its Markdown. The question, one
    line ending in "?", is the heading: the agent matches FAQ headings as strongly as the
    answer's own words, so the caller's phrasing finds it."""
    heading, answer = _heading(question), answer.strip()
    if not heading or not answer:
        raise KbError("give both the question and its answer")
    if len(heading) > MAX_QUESTION + 1 or len(answer) > MAX_ANSWER:
        raise KbError(f"too long: at most {MAX_QUESTION} characters of question and "
                      f"{MAX_ANSWER} of answer")
    return answer_path(settings, question), f"# {heading}\n\n{answer}\n"


class KbAdmin:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self._lock = asyncio.Lock()  # one edit at a time
        self._store: Any = None

    def _kb_store(self) -> Any:
        from appliance.kb.store import KbStore

        if self._store is None:
            self._store = KbStore(self.settings)
        return self._store

    async def documents(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            uploads = str(uploads_dir(self.settings))
            return [{"source": d.source, "path": d.path, "chunks": d.chunks,
                     "uploaded": d.path.startswith(uploads)} for d in self._kb_store().documents()]
        return await asyncio.to_thread(read)

    async def upload(self, filename: str, data: bytes) -> dict[str, Any]:
        if len(data) > MAX_UPLOAD_BYTES:
            raise KbError(f"file too large: {len(data)} bytes, the limit is {MAX_UPLOAD_BYTES}")
        return await self._write_and_ingest(upload_path(self.settings, filename), data)

    async def add_answer(self, question: str, answer: str) -> dict[str, Any]:
        """A new FAQ entry, ``<kb_dir>/answers/<slug>.md`` (the question as its heading), ingested
        now: the running agent answers it on the next turn. The same question again replaces
        its entry (an edited answer)."""
        path, text = answer_entry(self.settings, question, answer)
        return await self._write_and_ingest(path, text.encode())

    async def _write_and_ingest(self, path: Path, data: bytes) -> dict[str, Any]:
        """Write one document and ingest it on the spot; refused (and removed) if unreadable."""
        def write_and_ingest() -> dict[str, Any]:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError as err:
                raise KbError(f"cannot write {path}: {err.strerror}") from err
            report = self._kb_store().ingest([path], progress=False)
            if report.skipped:
                path.unlink(missing_ok=True)
                raise KbError("; ".join(f"{s}: {why}" for s, why in report.skipped))
            return {"summary": report.summary(), "path": str(path)}

        async with self._lock:
            result = await asyncio.to_thread(write_and_ingest)
            await self._attach()
        return result

    async def remove(self, path: str) -> list[str]:
        def remove() -> list[str]:
            removed: list[str] = self._kb_store().remove(path)
            target = Path(path)
            if target.parent == uploads_dir(self.settings).resolve():
                target.unlink(missing_ok=True)
            return removed

        async with self._lock:
            return await asyncio.to_thread(remove)

    async def reingest(self) -> str:
        """Re-read kb_dir and the uploads: changed files re-embedded, vanished ones dropped."""
        folders = [p for p in (Path(self.settings.kb_dir), uploads_dir(self.settings))
                   if p.is_dir()]

        async with self._lock:
            report = await asyncio.to_thread(
                lambda: self._kb_store().ingest(folders, progress=False))
            await self._attach()
        return str(report.summary())

    async def _attach(self) -> None:
        """A server started with an empty knowledge base answers ungrounded: give its agent
        the now-filled one."""
        engines = self.runtime.engines
        if engines is None or engines.agent.kb is not None:
            return
        from appliance.kb.store import ChromaKnowledgeBase

        engines.agent.kb = await asyncio.to_thread(ChromaKnowledgeBase.open, self.settings)

    async def ask(self, text: str) -> dict[str, Any]:
        """Exactly ``appliance ask``: the running agent's retrieval and LLM, one turn."""
        from appliance.cli.ask_cmd import answer  # the cli package imports the web app

        engines = self.runtime.engines
        if engines is None:
            raise KbError("the models are still loading")
        return await answer(engines.agent, text)

    async def describe(self, chunk_ids: list[str]) -> dict[str, dict[str, str]]:
        """Document and heading of each chunk id a turn recorded."""
        if not chunk_ids:
            return {}

        def read() -> dict[str, dict[str, str]]:
            got = self._kb_store()._collection.get(ids=chunk_ids, include=["metadatas"])
            return {cid: {"source": str(m.get("source", "")), "heading": str(m.get("heading", ""))}
                    for cid, m in zip(got["ids"], got["metadatas"] or [], strict=True)}
        try:
            return await asyncio.to_thread(read)
        except Exception:  # noqa: BLE001 - an unreadable KB still shows the call, by chunk id
            return {}
