"""The shared servers of a scale-out run, started (or namespaced) for one benchmark or test.

A model server (``python -m llama_cpp.server``) and a Chroma server (``chroma run``) run as child
processes on free loopback ports and are killed afterwards; PostgreSQL and Redis are the
operator's own, so a run gets a fresh schema (dropped afterwards) and a fresh Redis key prefix
(its keys deleted afterwards) and never touches anyone else's data.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

CHAT_REQUEST = "POST /v1/chat/completions"  # one line per request in the model server's log


class ServiceError(RuntimeError):
    """A shared server would not start or cannot be reached; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def spawned(cmd: list[str], ready_url: str, log: Path, timeout_s: float = 120.0
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until ``ready_url`` answers 200; kill it (and wait) afterwards, however the
    block ends."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(ready_url, timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"{' '.join(cmd[:3])} did not start: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@dataclass(frozen=True, slots=True)
class ModelServer:
    url: str  # the OpenAI-compatible base URL, ending /v1
    alias: str  # the model name it answers to
    proc: subprocess.Popen[bytes]
    log: Path

    def chat_requests(self) -> int:
        """Chat completions it has served so far (from its access log)."""
        try:
            return self.log.read_text(errors="replace").count(CHAT_REQUEST)
        except OSError:
            return 0


@contextmanager
def model_server(log_dir: Path, model: Path, *, alias: str = "smol", threads: int = 1,
                 batch_threads: int = 1, n_ctx: int = 1024,
                 timeout_s: float = 120.0) -> Iterator[ModelServer]:
    """``python -m llama_cpp.server`` on ``model``, tuned as the in-process engine is: the same
    context size and thread counts, and no ``--chat_format`` so both take the GGUF's own chat
    template (tests/e2e/test_model_server.py: greedy answers are identical)."""
    port = free_port()
    log = log_dir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--model_alias", alias,
           "--n_threads", str(threads), "--n_threads_batch", str(batch_threads),
           "--n_ctx", str(n_ctx)]
    base = f"http://127.0.0.1:{port}/v1"
    with spawned(cmd, f"{base}/models", log, timeout_s) as proc:
        yield ModelServer(base, alias, proc, log)


@contextmanager
def chroma_server(data_dir: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """``chroma run`` (shipped in the chromadb package) keeping its data in ``data_dir``: its
    URL."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    cmd = [str(chroma), "run", "--path", str(data_dir / "chroma"), "--host", "127.0.0.1",
           "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with spawned(cmd, f"{url}/api/v2/heartbeat", data_dir / f"chroma-{port}.log", timeout_s):
        yield url


@contextmanager
def postgres_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A URL whose connections use a fresh schema of the database at ``url``, dropped after."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.Error as err:
        raise ServiceError(f"PostgreSQL is not reachable: {type(err).__name__}: "
                           f"{str(err).strip()}") from err
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            sep = "&" if "?" in url else "?"
            yield f"{url}{sep}options={quote(f'-c search_path={schema}')}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def redis_namespace(url: str, prefix: str = "bench") -> Iterator[str]:
    """A fresh cluster name (Redis key prefix) on the Redis at ``url``; its keys deleted after."""
    import redis

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        raise ServiceError(f"Redis is not reachable: {type(err).__name__}: {err}") from err
    try:
        yield name
    finally:
        try:
            keys = list(client.scan_iter(f"{name}:*"))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            pass
        finally:
            client.close()
