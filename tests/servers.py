"""Start real engine servers (a model server, a Chroma server) as child processes on loopback,
the way ``appliance bench --cluster`` does (appliance/bench/services.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.bench import services
from appliance.models.locate import default_path


@contextmanager
def model_server(tmp: Path, alias: str = "smol"
                 ) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``python -m llama_cpp.server`` on the default GGUF: (base URL ending /v1, process, log)."""
    with services.model_server(tmp, default_path("llm"), alias=alias) as server:
        yield server.url, server.proc, server.log


@contextmanager
def chroma_server(tmp: Path) -> Iterator[str]:
    """``chroma run`` (shipped in the chromadb package) on a temporary path: its URL."""
    with services.chroma_server(tmp) as url:
        yield url
