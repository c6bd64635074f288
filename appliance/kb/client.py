"""Which Chroma the knowledge base lives in: embedded under the data dir (default), or a Chroma
server that every box shares (``kb_url``), so an ingest on one box is searched by all at once.

Embedded Chroma keeps each collection's vector index in memory per process: a serving process
counts documents another process (``appliance kb ingest``) added, but its searches do not find
them (measured with chromadb 1.5). So every embedded write bumps a stamp file, and the serving
side reopens its client when the stamp changed: one ``stat`` per search.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import chromadb
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from appliance.config import ConfigError, Settings

STAMP = "ingested.stamp"


def db_path(settings: Settings) -> Path:
    return settings.data_path / "kb"


def chroma_client(settings: Settings) -> ClientAPI:
    """A Chroma server's HTTP client when ``kb_url`` is set, else the embedded database."""
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if not settings.kb_url:
        return chromadb.PersistentClient(path=str(db_path(settings)), settings=chroma_settings)
    url = urlsplit(settings.kb_url)
    if url.scheme not in {"http", "https"} or not url.hostname:
        raise ConfigError(f"invalid value for APPLIANCE_KB_URL: {settings.kb_url!r} "
                          "(expected http(s)://host:port)")
    ssl = url.scheme == "https"
    return chromadb.HttpClient(host=url.hostname, port=url.port or (443 if ssl else 8000),
                               ssl=ssl, settings=chroma_settings)


def location(settings: Settings) -> str:
    """Where the knowledge base is, for /healthz and log lines."""
    return settings.kb_url or str(db_path(settings))


def mark_changed(settings: Settings) -> None:
    """Tell serving processes on this box that the embedded database changed."""
    if not settings.kb_url:
        stamp = db_path(settings) / STAMP
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(str(os.getpid()))


def changed_since(settings: Settings, seen: int) -> int:
    """The stamp's mtime (ns) if it differs from ``seen``, else 0; always 0 for a server."""
    if settings.kb_url:
        return 0
    try:
        now = (db_path(settings) / STAMP).stat().st_mtime_ns
    except FileNotFoundError:
        return 0
    return now if now != seen else 0
