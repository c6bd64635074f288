"""Start real engine servers (a model server, a Chroma server) as child processes on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from appliance.models.locate import default_path
from tests.conftest import free_port


@contextmanager
def spawned(cmd: list[str], ready_url: str, log: Path, timeout: float = 120.0
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until ``ready_url`` answers 200; kill it (and wait) afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:3]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@contextmanager
def model_server(tmp: Path, alias: str = "smol"
                 ) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``python -m llama_cpp.server`` on the default GGUF: (base URL ending /v1, process, log)."""
    port = free_port()
    log = tmp / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_path("llm")),
           "--host", "127.0.0.1", "--port", str(port), "--model_alias", alias,
           "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "1024"]
    base = f"http://127.0.0.1:{port}/v1"
    with spawned(cmd, f"{base}/models", log) as proc:
        yield base, proc, log


@contextmanager
def chroma_server(tmp: Path) -> Iterator[str]:
    """``chroma run`` (shipped in the chromadb package) on a temporary path: its URL."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    cmd = [str(chroma), "run", "--path", str(tmp / "chroma"), "--host", "127.0.0.1",
           "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with spawned(cmd, f"{url}/api/v2/heartbeat", tmp / f"chroma-{port}.log"):
        yield url
