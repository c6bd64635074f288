"""Everything the web layer shares across requests: settings, engines, call log, call slots."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from appliance.config import Settings, api_token
from appliance.core.live import LiveFeed
from appliance.core.session import Engines
from appliance.engines.base import CallStore, EngineInfo
from appliance.recordings import Recordings
from appliance.store.postgres import call_store
from appliance.telephony.twilio_calls import TwilioCalls
from appliance.web.loop_monitor import LoopLagMonitor
from appliance.web.refusals import RefusalLog
from appliance.web.twilio_auth import SignatureChecker

if TYPE_CHECKING:
    from appliance.web.cluster import Cluster
    from appliance.web.cluster_live import ClusterLive

log = logging.getLogger(__name__)

TICKET_PARAMETER = "ticket"  # the <Parameter> that carries a call's socket ticket


def new_ticket() -> str:
    """A fresh socket ticket: 144 random bits, URL-safe (it travels in TwiML)."""
    return secrets.token_urlsafe(18)


class LiveSession(Protocol):
    """What the console's operator buttons need of a live call, whichever front door."""

    call_sid: str

    async def hang_up(self) -> None: ...

    async def transfer(self, number: str) -> None: ...


class ActionRefused(RuntimeError):
    """An operator's hang-up or transfer that cannot be done; the message says why."""


@dataclass(frozen=True, slots=True)
class Ticket:
    token: str
    minted: float


@dataclass
class CallSlots:
    """Admission control: live streams plus calls answered whose socket has not started yet.

    The webhook (signed by Twilio) reserves a slot and mints a one-use ticket bound to the
    callSid; the socket's start/setup must bring that ticket back before ``ticket_s`` passes.
    So the socket signature, which never changes, is not enough on its own: a socket opens a
    call only the webhook admitted moments before, once, and never beyond ``limit``. In a
    cluster the tickets live in Redis instead (``web.cluster.ClusterSlots``), so the box a
    webhook hands a call to can check them.
    """

    limit: int
    ticket_s: float = 30.0
    now: Callable[[], float] = time.monotonic
    active: set[str] = field(default_factory=set)
    pending: dict[str, Ticket] = field(default_factory=dict)

    def count(self) -> int:
        now = self.now()
        self.pending = {sid: t for sid, t in self.pending.items()
                        if now - t.minted < self.ticket_s}
        return len(self.active) + len(self.pending)

    def reserve(self, call_sid: str) -> str | None:
        """A slot and a fresh ticket for ``call_sid``; None when full (or already live)."""
        if call_sid in self.active:
            return None
        if call_sid not in self.pending and self.count() >= self.limit:
            return None
        token = new_ticket()
        self.pending[call_sid] = Ticket(token, self.now())
        return token

    def admit(self, call_sid: str, token: str) -> str | None:
        """Turn a reservation into a live call; the refusal reason if the ticket is not good."""
        ticket = self.pending.get(call_sid)
        if ticket is None:
            return "no-ticket"  # never admitted by the webhook, used already, or expired
        if not hmac.compare_digest(ticket.token.encode(), token.encode()):
            return "bad-ticket"
        del self.pending[call_sid]
        if self.now() - ticket.minted >= self.ticket_s:
            return "expired-ticket"
        return self.take(call_sid)

    async def claim(self, call_sid: str, token: str) -> str | None:
        """What a socket's start/setup calls: :meth:`admit` here; a cluster also asks Redis."""
        return self.admit(call_sid, token)

    def take(self, call_sid: str) -> str | None:
        """A live slot for a call whose ticket checked out (here, or in the cluster's Redis);
        the refusal reason if the box is full or the call is live already."""
        if call_sid in self.active:
            return "no-ticket"  # its one socket is open already: this one is a replay
        if len(self.active) >= self.limit:
            return "over-limit"
        self.active.add(call_sid)
        return None

    def release(self, call_sid: str) -> None:
        self.active.discard(call_sid)
        self.pending.pop(call_sid, None)


@dataclass
class Runtime:
    settings: Settings
    store: CallStore
    twilio: TwilioCalls
    signatures: SignatureChecker
    calls: CallSlots
    api_token: str  # what /api/* needs as its bearer token
    recordings: Recordings  # the calls' audio files (README "Recordings")
    engines: Engines | None = None  # None until every model is loaded
    models: list[EngineInfo] = field(default_factory=list)
    load_error: str = ""
    draining: bool = False  # shutting down: live calls finish, new ones are refused
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    refusals: RefusalLog = field(
        default_factory=lambda: RefusalLog(logging.getLogger("appliance.web.refusals")))
    refused: Counter[str] = field(default_factory=Counter)  # sockets refused, by reason
    cluster: Cluster | None = None  # several boxes sharing admission through Redis
    sessions: dict[str, LiveSession] = field(default_factory=dict)  # live, for the console
    live: LiveFeed = field(default_factory=LiveFeed)  # live calls as they happen, for watchers
    cluster_live: ClusterLive | None = None  # every box's live calls in that feed (a cluster)

    async def act(self, call_sid: str, action: str) -> None:
        """Hang up or transfer (``action``) a call live on this box, as the agent's own tools
        would: LookupError if it is not, ActionRefused if it cannot be done."""
        session = self.sessions.get(call_sid)
        if session is None:
            raise LookupError(f"no live call {call_sid}")
        try:
            if action == "transfer":
                number = self.settings.transfer_number
                if not number:
                    raise ActionRefused("no transfer number is configured "
                                        "(APPLIANCE_TRANSFER_NUMBER)")
                await session.transfer(number)
            else:
                await session.hang_up()
        except ActionRefused:
            raise
        except Exception as err:
            raise ActionRefused(f"{action} failed: {err}") from err

    def refuse(self, what: str, reason: str, detail: str = "") -> None:
        """Count one refused socket by reason (``/api/metrics``, the bench) and log it through
        :attr:`refusals`, the one rate limit on refusal lines: an attack cannot flood the log."""
        self.refused[reason] += 1
        self.refusals.warning(reason, "%s socket refused (%s, %d so far)%s", what, reason,
                              self.refused[reason], f": {detail}" if detail else "")

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            store=call_store(settings),
            twilio=TwilioCalls(settings.twilio_account_sid, settings.twilio_auth_token),
            signatures=SignatureChecker(settings),
            calls=CallSlots(limit=settings.max_calls, ticket_s=settings.socket_ticket_s),
            api_token=api_token(settings),
            recordings=Recordings(settings.recordings_path),
        )
