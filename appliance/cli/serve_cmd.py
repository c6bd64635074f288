"""``appliance serve``: the phone agent's HTTP/WebSocket server."""

from __future__ import annotations

import argparse
import logging
import threading
import time
from types import FrameType

import uvicorn

from appliance.config import Settings
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


def serve(args: argparse.Namespace, settings: Settings) -> int:
    app = create_app(settings, load_engines)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            ws_max_size=WS_MAX_BYTES, timeout_graceful_shutdown=30,
                            proxy_headers=True, lifespan="on")
    DrainingServer(config, app.state.runtime).run()
    return 0
