"""Twilio's side of the wire, written once for every simulated caller (Media Streams,
ConversationRelay, the socket-level tests and the benchmark): signed webhooks, the TwiML they
answer, and signed sockets.

Twilio signs each request with ``X-Twilio-Signature`` over the *public* URL it called, so a
simulated caller signs the public URL and sends to where the server really listens (no TLS
proxy in between). The sockets are signed the same way over their exact ws(s) URL, no params.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from appliance.caller.report import CallFailed

VOICE_PATH = "/twilio/voice"


class Rejected(Exception):
    """The webhook answered without ``<Connect>`` (busy, not ready): a result, not a fault."""


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """``<Connect><Stream>``: a Media Streams socket."""

    url: str
    parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """``<Connect action><ConversationRelay>``: a relay socket, and where its end is posted."""

    url: str
    action: str
    greeting: str
    parameters: dict[str, str]


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(auth_token).compute_signature(url, params)


def ringing_form(call_sid: str, account_sid: str, caller: str, callee: str) -> dict[str, str]:
    """The voice webhook's form fields, as Twilio posts them when a call rings."""
    return {"CallSid": call_sid, "AccountSid": account_sid, "From": caller, "To": callee,
            "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


async def signed_post(http: httpx.AsyncClient, base_url: str, public_base_url: str,
                      auth_token: str, url: str, form: dict[str, str]) -> str:
    """POST ``form`` to one of the server's public URLs, signed as Twilio signs it; the body."""
    public = public_base_url.rstrip("/")
    local = base_url.rstrip("/") + url[len(public):] if url.startswith(public) else url
    try:
        resp = await http.post(local, data=form,
                               headers={"X-Twilio-Signature": sign(auth_token, url, form)})
    except httpx.HTTPError as err:
        raise CallFailed(f"cannot reach {local}: {type(err).__name__}: {err}") from err
    if resp.status_code == 403:
        raise CallFailed(f"{local} refused the signature (HTTP 403): the auth token and public "
                         f"base URL ({public_base_url}) must match the server's")
    if resp.status_code != 200:
        raise CallFailed(f"{local} answered HTTP {resp.status_code}: {resp.text[:200]!r}")
    return resp.text


def parse_twiml(body: str) -> StreamTarget | RelayTarget:
    """Where a webhook answer connects the call; :class:`Rejected` for any other answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise CallFailed(f"webhook answer is not TwiML ({err}): {body[:200]!r}") from err
    if root.tag != "Response":
        raise CallFailed(f"webhook answer is not a TwiML <Response>: {body[:200]!r}")
    if (stream := root.find("Connect/Stream")) is not None:
        if not stream.get("url"):
            raise CallFailed("TwiML <Stream> has no url attribute")
        return StreamTarget(stream.get("url", ""), _parameters(stream))
    if (relay := root.find("Connect/ConversationRelay")) is not None:
        if not relay.get("url"):
            raise CallFailed("TwiML <ConversationRelay> has no url attribute")
        connect_el = root.find("Connect")
        action = connect_el.get("action", "") if connect_el is not None else ""
        return RelayTarget(relay.get("url", ""), action, relay.get("welcomeGreeting", ""),
                           _parameters(relay))
    raise Rejected(describe(root))


def _parameters(element: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in element.findall("Parameter")}


def describe(root: ET.Element) -> str:
    """TwiML verbs in one line, e.g. '<Dial> +15550001111'."""
    verbs = [f"<{el.tag}> {' '.join(el.itertext()).strip()}".strip() for el in root]
    return "; ".join(verbs) or "empty <Response>"


def socket_url(base_url: str, public_url: str, public_base_url: str = "") -> str:
    """``public_url``'s path on the server we can actually reach (no TLS proxy in between).

    A socket URL on another host than ``public_base_url`` means the webhook handed the call to
    another box of a cluster: that URL is used as it is.
    """
    if public_base_url and urlsplit(public_url).netloc != urlsplit(public_base_url).netloc:
        return public_url
    base = urlsplit(base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    return urlunsplit((scheme, base.netloc, urlsplit(public_url).path or "/", "", ""))


async def open_socket(base_url: str, url: str, auth_token: str, *, what: str,
                      timeout_s: float = 10.0, public_base_url: str = "") -> ClientConnection:
    """Connect to ``url``'s path on ``base_url`` (or to ``url`` itself when it names another
    box than ``public_base_url``), signed over ``url`` as Twilio signs it."""
    local = socket_url(base_url, url, public_base_url)
    try:
        return await connect(local, additional_headers={"X-Twilio-Signature":
                                                        sign(auth_token, url, {})},
                             user_agent_header="Twilio.TmeWs/1.0", compression=None,
                             open_timeout=timeout_s, ping_interval=None, close_timeout=2)
    except InvalidStatus as err:
        status = err.response.status_code
        hint = ": check the auth token and public base URL" if status == 403 else ""
        raise CallFailed(f"{what} {local} refused: HTTP {status}{hint}") from err
    except (OSError, TimeoutError, WebSocketException) as err:
        raise CallFailed(f"cannot open {what} {local}: {type(err).__name__}: {err}") from err
