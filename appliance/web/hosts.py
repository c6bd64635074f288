"""A Host allow-list derived from the public base URL, plus loopback for health checks.

Requests naming any other host (DNS rebinding, scanners hitting the bare IP, a proxy forwarding
traffic meant for another site) are refused before routing. Litestar's own
``AllowedHostsConfig`` compares the whole Host header, port included, so a loopback health
check on whatever port Docker or a proxy maps would need every port listed; this compares host
names only.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from appliance.config import Settings
from appliance.web.refusals import RefusalLog

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """The public URL's host, loopback, and the bind address when it names one interface."""
    hosts = {urlsplit(settings.public_base_url).hostname or "", *LOOPBACK}
    if settings.host not in WILDCARD_BINDS:
        hosts.add(settings.host.lower())
    return frozenset(hosts - {""})


def host_of(header: str) -> str:
    """The host name in a Host header ("[::1]:8080" -> "::1"), lower case; "" if unparsable."""
    try:
        return urlsplit("//" + header).hostname or ""
    except ValueError:
        return ""


def host_allow_list(hosts: frozenset[str],
                    refusals: RefusalLog) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware refusing HTTP (400) and WebSocket upgrades (closed, so 403) whose Host
    header names none of ``hosts``."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def check(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_of(header) in hosts:
                await app(scope, receive, send)
                return
            refusals.warning("host", "request for host %r refused (allowed: %s)", header[:100],
                             ", ".join(sorted(hosts)))
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            start: HTTPResponseStartEvent = {
                "type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"text/plain")]}
            await send(start)
            await send({"type": "http.response.body", "body": b"unknown host\n",
                        "more_body": False})

        return check

    return middleware
