"""``appliance serve``: the phone agent's HTTP/WebSocket server."""

from __future__ import annotations

import argparse

import uvicorn

from appliance.config import Settings
from appliance.engines.registry import load_engines
from appliance.web.app import create_app

WS_MAX_BYTES = 1 << 20  # the handler refuses anything over 16 KiB itself, with a logged reason


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve the phone agent (Twilio webhook + media socket)")
    parser.add_argument("--host", help="bind address (default: $APPLIANCE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $APPLIANCE_PORT or 8080)")
    parser.set_defaults(func=serve, overrides=lambda a: {"host": a.host, "port": a.port})


def serve(args: argparse.Namespace, settings: Settings) -> int:
    app = create_app(settings, load_engines)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            ws_max_size=WS_MAX_BYTES, timeout_graceful_shutdown=600,
                            proxy_headers=True, lifespan="on")
    uvicorn.Server(config).run()
    return 0
