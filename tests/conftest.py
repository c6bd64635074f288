"""Shared fixtures: settings in a temp data dir and a real uvicorn server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from appliance.bench.runner import free_port
from appliance.cli.serve_cmd import uvicorn_options
from appliance.config import Settings, api_headers, load_settings

AUTH_TOKEN = "test-auth-token-0123456789"
pytest_plugins = ["tests.services"]  # PostgreSQL and Redis fixtures


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    port = overrides.pop("port", None) or free_port()
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "port": port,
        "public_base_url": f"http://127.0.0.1:{port}",
        "twilio_auth_token": AUTH_TOKEN,  # signatures only: no account SID, so no REST calls
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


_API_HEADERS: dict[str, dict[str, str]] = {}


def api_auth(base: str) -> dict[str, str]:
    """The Authorization header ``/api/*`` of the server running at ``base`` wants."""
    return _API_HEADERS[base]


@contextmanager
def running_server(app: Any, settings: Settings, ready_timeout: float = 120.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread, configured as ``appliance serve`` configures it;
    yield its base URL once /healthz says ready."""
    config = uvicorn.Config(app, **(uvicorn_options(settings) | {"host": "127.0.0.1"}))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    _API_HEADERS[base] = api_headers(settings)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """asyncio only: the appliance runs on asyncio, and anyio would otherwise also run every
    anyio test on trio whenever trio is installed (selenium, a test dependency, pulls it in)."""
    return "asyncio"
