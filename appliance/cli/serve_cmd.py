"""``appliance serve``: the phone agent's HTTP/WebSocket server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

from appliance.config import Settings
from appliance.doctor.runner import run_check
from appliance.private_files import UMASK, private_dir
from appliance.web.app import create_app
from appliance.web.runtime import Runtime
from appliance.wiring import load_engines

log = logging.getLogger(__name__)

WS_MAX_BYTES = 1 << 20  # the handlers refuse anything over 16 KiB themselves, with a logged reason
DRAIN_S = 600.0  # matches TimeoutStopSec in systemd/appliance.service


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve the phone agent (Twilio webhook + media socket)")
    parser.add_argument("--host", help="bind address (default: $APPLIANCE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $APPLIANCE_PORT or 8080)")
    parser.set_defaults(func=serve, overrides=lambda a: {"host": a.host, "port": a.port})


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM/SIGINT, stop admitting calls and exit once live calls end (uvicorn
    alone would cut every call's socket at once). A second signal exits immediately."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.live.close()  # live-page streams end now: uvicorn would wait for them
        if self.runtime.draining or not self.runtime.calls.active:
            super().handle_exit(sig, frame)
            return
        self.runtime.draining = True
        log.warning("stopping: no new calls; waiting for %d live call(s) to end (signal again to "
                    "stop now)", len(self.runtime.calls.active))
        threading.Thread(target=self._exit_when_idle, args=(sig, frame), daemon=True).start()

    def _exit_when_idle(self, sig: int, frame: FrameType | None) -> None:
        deadline = time.monotonic() + DRAIN_S
        while self.runtime.calls.active and time.monotonic() < deadline:
            time.sleep(0.5)
        super().handle_exit(sig, frame)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Forwarded headers (X-Forwarded-For/-Proto) are believed only from the configured proxies:
    by default from nobody, so no client can claim another address."""
    proxies = settings.proxy_list
    return {"host": settings.host, "port": settings.port, "log_config": None,
            "ws_max_size": WS_MAX_BYTES, "timeout_graceful_shutdown": 30, "lifespan": "on",
            "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies,
            "server_header": False}


def serve(args: argparse.Namespace, settings: Settings) -> int:
    os.umask(UMASK)  # call records, tokens, the knowledge base: private to the service user
    private_dir(settings.data_path)
    # A llama.cpp build the CPU cannot run dies with SIGILL on the first token: find out in a
    # child now, so a bad build is a clear start-up error, never a server that dies on a caller.
    preflight = run_check("llm", settings)
    if not preflight.ok:
        log.error("LLM preflight failed: %s", preflight.detail)
        print(f"appliance serve: cannot start: LLM check failed: {preflight.detail}",
              file=sys.stderr)
        return 1
    log.info("LLM preflight ok in %.1f s (%s)", preflight.seconds, preflight.detail)
    app = create_app(settings, load_engines)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    DrainingServer(config, app.state.runtime).run()
    return 0
