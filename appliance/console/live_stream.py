"""``GET /api/v1/live/stream``: the Live page's calls pushed as Server-Sent Events.

Events: ``snapshot`` (every live call, first and after a watcher fell behind), ``call`` (one
opened), ``state`` (listening / thinking / speaking), ``line`` (a caller utterance or an agent
sentence as it is spoken), ``ended``, and ``bye`` before the server ends the stream (logged out,
draining). Each carries JSON; a comment line every ``HEARTBEAT_S`` keeps proxies from closing an
idle stream, and at each heartbeat the credential is checked again, so a session that logged out
elsewhere, expired or a revoked token stops watching within that time (a logout on this box ends
its streams at once).

Replaces the page's once-a-second poll: with the poll each open page cost a database query a
second whether anything happened or not; the stream costs nothing between events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get
from litestar.exceptions import ServiceUnavailableException
from litestar.response import ServerSentEvent, ServerSentEventMessage

from appliance.console import services
from appliance.console.security import SESSION_COOKIE, authenticate, principal_of
from appliance.console.state import Console, console_of
from appliance.core.live import CLOSE, RESYNC

HEARTBEAT_S = 15.0
RETRY_MS = 3000  # how soon a browser reconnects after the stream drops


def message(event: str, data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=json.dumps(data), retry=RETRY_MS)


async def events(request: Request[Any, Any, Any], console: Console,
                 secret: str) -> AsyncIterator[ServerSentEventMessage]:
    """Subscribed on the first read, so a client gone before then leaves nothing behind."""
    subscription = console.runtime.live.subscribe()
    console.watching(secret, subscription)
    try:
        while True:
            item = await subscription.next(HEARTBEAT_S)
            if item is None:
                if await authenticate(request) is None:
                    yield message("bye", {"reason": "logged out"})
                    return
                yield ServerSentEventMessage(data=None, comment="ping")
                continue
            event, data = item
            if event == CLOSE:
                yield message("bye", {"reason": data or "the server is shutting down"})
                return
            if event == RESYNC:
                data = await services.with_callers(console, data)
            elif event == "call":
                data = (await services.with_callers(console, [data]))[0]
            yield message(event, data)
    finally:
        console.runtime.live.unsubscribe(subscription)
        console.unwatching(secret, subscription)


@get("/live/stream", summary="Calls in progress as Server-Sent Events",
     media_type="text/event-stream")
async def live_stream(request: Request[Any, Any, Any]) -> ServerSentEvent:
    """A ``snapshot`` event, then ``call``, ``state``, ``line`` and ``ended`` as they happen."""
    console = console_of(request)
    if console.runtime.live.shut:
        raise ServiceUnavailableException("the server is shutting down")
    secret = request.cookies.get(SESSION_COOKIE, "") if principal_of(request).via == "session" \
        else ""
    return ServerSentEvent(events(request, console, secret),
                           headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
