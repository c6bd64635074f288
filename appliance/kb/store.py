"""The knowledge base in Chroma: idempotent ingest, listing and removal, and search.

One Chroma database, embedded at ``<data_dir>/kb`` or on a Chroma server (``kb_client``). Its
collection records which
embedding model built it (name, dimension, distance), because vectors from two models cannot be
compared: opening it with another model is refused rather than answering with nonsense.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.errors import NotFoundError
from tqdm import tqdm

from appliance.config import Settings
from appliance.engines.base import EngineInfo, KbChunk
from appliance.kb import KbError
from appliance.kb.chunking import chunk_sections
from appliance.kb.client import changed_since, chroma_client, location, mark_changed
from appliance.kb.embedding import OnnxEmbedder, embedder_from_settings
from appliance.kb.loaders import load, supported

DISTANCE: Final = "cosine"


@dataclass(slots=True)
class IngestReport:
    """What one ingest did, per document source, and the totals afterwards."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    chunks_written: int = 0
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
            f"{len(self.skipped)} skipped; {self.chunks_written} chunks embedded in "
            f"{self.seconds:.1f} s. Knowledge base: {self.documents} documents, "
            f"{self.chunks} chunks."
        )


@dataclass(frozen=True, slots=True)
class StoredDocument:
    source: str  # path relative to the folder it was ingested from
    path: str  # absolute path: the document's identity
    sha256: str
    chunks: int
    chunk_ids: tuple[str, ...]


def _check_model(collection: Collection, embedder: OnnxEmbedder) -> None:
    meta = collection.metadata or {}
    built = meta.get("embed_model")
    if built != embedder.model_id:  # the id names the weights, so it fixes the dimension too
        raise KbError(
            f"knowledge base collection {collection.name!r} was built with embedding model "
            f"{built} ({meta.get('embed_dim')} dims) but the configured model is "
            f"{embedder.model_id}; their vectors cannot be compared. Set APPLIANCE_EMBED_MODEL "
            "back, or run `appliance kb ingest --rebuild` to re-embed every document."
        )


def open_collection(
    client: ClientAPI, name: str, embedder: OnnxEmbedder, *, rebuild: bool = False
) -> Collection:
    """The collection, created empty if missing; refused if another model built it."""
    if rebuild:
        with contextlib.suppress(NotFoundError):
            client.delete_collection(name)
    try:
        # Read the recorded model before handing Chroma our function: a different function
        # name would otherwise fail inside Chroma with a less helpful message.
        _check_model(client.get_collection(name, embedding_function=None), embedder)
    except NotFoundError:
        return client.create_collection(
            name,
            configuration={"hnsw": {"space": DISTANCE}},
            metadata={"embed_model": embedder.model_id, "embed_dim": embedder.dim,
                      "distance": DISTANCE},
            embedding_function=embedder,  # type: ignore[arg-type]  # typed for any Embeddable
        )
    return client.get_collection(name, embedding_function=embedder)  # type: ignore[arg-type]


def ingest_paths(
    settings: Settings,
    paths: Sequence[str | Path],
    *,
    embedder: OnnxEmbedder | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> IngestReport:
    """One-call ingest for the CLI and for serving's first start."""
    return KbStore(settings, embedder, rebuild=rebuild).ingest(paths, progress=progress)


class KbStore:
    """The writing side, used by ``appliance kb``: ingest, list and remove documents."""

    def __init__(
        self, settings: Settings, embedder: OnnxEmbedder | None = None, *, rebuild: bool = False
    ) -> None:
        self._settings = settings
        self._embedder = embedder or embedder_from_settings(settings)
        self._max_bytes = int(settings.kb_max_file_mb * 1024 * 1024)
        self._client = chroma_client(settings)
        self._collection = open_collection(
            self._client, settings.kb_collection, self._embedder, rebuild=rebuild
        )

    def documents(self) -> list[StoredDocument]:
        """Every stored document, from the chunks' metadata (the one source of truth)."""
        stored = self._collection.get(include=["metadatas"])
        by_path: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for chunk_id, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True):
            by_path.setdefault(str(meta["path"]), (dict(meta), []))[1].append(chunk_id)
        return sorted(
            (
                StoredDocument(str(m["source"]), p, str(m["sha256"]), len(ids), tuple(ids))
                for p, (m, ids) in by_path.items()
            ),
            key=lambda d: d.path,
        )

    def ingest(self, paths: Sequence[str | Path], *, progress: bool = True) -> IngestReport:
        """Bring the store in line with ``paths`` (files or folders, searched recursively).

        Unchanged files (same SHA-256) are skipped, changed ones re-embedded, and documents
        that vanished from an ingested folder removed. A bad file is reported, never fatal.
        """
        started = time.perf_counter()
        report = IngestReport()
        files, folders = _scan(paths, report)
        stored = {d.path: d for d in self.documents()}
        for file, root in tqdm(files, desc="Ingesting", unit="file", disable=not progress):
            self._ingest_file(file, root, stored.get(str(file)), report)
        seen = {str(file) for file, _ in files}
        for doc in stored.values():
            under = any(doc.path.startswith(f"{folder}{os.sep}") for folder in folders)
            if under and doc.path not in seen:
                self._collection.delete(ids=list(doc.chunk_ids))
                report.removed.append(doc.source)
        report.documents = len(self.documents())
        report.chunks = self._collection.count()
        report.seconds = time.perf_counter() - started
        if report.chunks_written or report.removed or report.skipped:
            mark_changed(self._settings)
        return report

    def _ingest_file(
        self, file: Path, root: Path, old: StoredDocument | None, report: IngestReport
    ) -> None:
        source = file.relative_to(root).as_posix()
        if not supported(file):
            report.skipped.append((source, f"unsupported file type {file.suffix or '(none)'}"))
            return
        try:
            if (size := file.stat().st_size) > self._max_bytes:
                limit = f"{self._max_bytes / 2**20:g} MB limit (APPLIANCE_KB_MAX_FILE_MB)"
                report.skipped.append((source, f"{size / 2**20:.1f} MB is over the {limit}"))
                return
            data = file.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if old and old.sha256 == sha:
                report.unchanged.append(source)
                return
            chunks = chunk_sections(load(file, data))
        except Exception as err:  # any one bad document must not stop the ingest
            report.skipped.append((source, f"unreadable: {err}"))
            return
        if not chunks:  # an emptied document must stop answering questions
            if old:
                self._collection.delete(ids=list(old.chunk_ids))
            report.skipped.append((source, "no text found"))
            return
        key = hashlib.sha1(str(file).encode()).hexdigest()[:16]
        ids = [f"{key}:{i}" for i in range(len(chunks))]
        embeddings = self._embedder([c.embed_text for c in chunks])
        metadatas: list[dict[str, str | int]] = [
            {"source": source, "path": str(file), "sha256": sha, "heading": c.heading, "chunk": i}
            for i, c in enumerate(chunks)
        ]
        step = self._client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            self._collection.upsert(
                ids=ids[start:end],
                embeddings=embeddings[start:end],
                documents=[c.text for c in chunks[start:end]],
                metadatas=metadatas[start:end],  # type: ignore[arg-type]
            )
        if old:  # upsert first, then drop the surplus: searches never see the document missing
            if stale := sorted(set(old.chunk_ids) - set(ids)):
                self._collection.delete(ids=stale)
            report.updated.append(source)
        else:
            report.added.append(source)
        report.chunks_written += len(ids)

    def remove(self, path: str | Path) -> list[str]:
        """Forget a document, or every document under a folder; returns the sources removed."""
        target = str(Path(path).expanduser().resolve())
        removed = []
        for doc in self.documents():
            if doc.path == target or doc.path.startswith(f"{target}{os.sep}"):
                self._collection.delete(ids=list(doc.chunk_ids))
                removed.append(doc.source)
        if removed:
            mark_changed(self._settings)
        return removed


def _scan(
    paths: Sequence[str | Path], report: IngestReport
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(file, folder it was found under) pairs, and the folders whose vanished files to remove.

    A symlink in a folder that leads out of it is skipped: whoever can write to the knowledge-base
    folder must not be able to have ``/etc/…`` or another user's files read into answers.
    """
    files: list[tuple[Path, Path]] = []
    folders: list[Path] = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path.is_dir():
            folders.append(path)
            for f in sorted(path.rglob("*")):
                if not f.is_file() or any(p.startswith(".") for p in f.relative_to(path).parts):
                    continue
                if not f.resolve().is_relative_to(path):
                    report.skipped.append((f.relative_to(path).as_posix(),
                                           "symlink out of the knowledge-base folder"))
                    continue
                files.append((f, path))
        elif path.is_file():
            files.append((path, path.parent))
        else:
            report.skipped.append((str(given), "not found"))
    return files, folders


class ChromaKnowledgeBase:
    """The serving side (``KnowledgeBase``): search only, safe to call from worker threads.

    It writes nothing but an empty collection on a first start. Documents ingested by another
    process are searched at once: a Chroma server serves every client the same index, and the
    embedded database is reopened when an ingest stamped it (see ``kb.client``).
    """

    def __init__(self, collection: Collection, info: EngineInfo,
                 settings: Settings | None = None, embedder: OnnxEmbedder | None = None) -> None:
        self._collection = collection
        self.info = info
        self._settings, self._embedder = settings, embedder
        self._stamp = changed_since(settings, 0) if settings else 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings, embedder: OnnxEmbedder | None = None) -> ChromaKnowledgeBase:
        """Open ``<data_dir>/kb``; loads the embedding model now, not on a caller's turn."""
        embedder = embedder or embedder_from_settings(settings)
        embedder.load()
        collection = open_collection(chroma_client(settings), settings.kb_collection, embedder)
        info = EngineInfo(
            slot="kb",
            name=f"chroma:{settings.kb_collection} ({embedder.model_id})",
            version=chromadb.__version__,
            path=location(settings),
        )
        return cls(collection, info, settings, embedder)

    @property
    def collection(self) -> Collection:
        """The collection, reopened first if an embedded ingest changed it since."""
        settings, embedder = self._settings, self._embedder
        if settings is None or embedder is None or not changed_since(settings, self._stamp):
            return self._collection
        with self._lock:
            if stamp := changed_since(settings, self._stamp):
                SharedSystemClient.clear_system_cache()  # else the cached, stale index
                self._collection = open_collection(chroma_client(settings),
                                                   settings.kb_collection, embedder)
                self._stamp = stamp
        return self._collection

    def count(self) -> int:
        """Chunks stored: zero means nothing was ingested and answers cannot be grounded."""
        return self.collection.count()

    def all_chunks(self) -> list[KbChunk]:
        """Every stored chunk (distance 0): what the lexical index is built from."""
        stored = self._collection.get(include=["documents", "metadatas"])
        return [
            KbChunk(id=chunk_id, text=text or "", source=str(meta.get("source", "")),
                    distance=0.0, heading=str(meta.get("heading", "")), metadata=dict(meta))
            for chunk_id, text, meta in zip(stored["ids"], stored["documents"] or [],
                                            stored["metadatas"] or [], strict=True)
        ]

    def search(self, query: str, k: int) -> list[KbChunk]:
        """The ``k`` nearest chunks, best (smallest cosine distance) first."""
        if k <= 0 or not query.strip():
            return []
        result = self.collection.query(
            query_texts=[query], n_results=k, include=["documents", "metadatas", "distances"]
        )
        return [
            KbChunk(
                id=chunk_id,
                text=text or "",
                source=str(meta.get("source", "")),
                distance=float(distance),
                heading=str(meta.get("heading", "")),
                metadata=dict(meta),
            )
            for chunk_id, text, meta, distance in zip(
                result["ids"][0],
                (result["documents"] or [[]])[0],
                (result["metadatas"] or [[]])[0],
                (result["distances"] or [[]])[0],
                strict=True,
            )
        ]
