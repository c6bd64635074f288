"""Everything the web layer shares across requests: settings, engines, call log, call slots."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from appliance.config import Settings, api_token
from appliance.core.session import CallSession, Engines
from appliance.engines.base import CallStore, EngineInfo
from appliance.store.postgres import call_store
from appliance.telephony.twilio_calls import TwilioCalls
from appliance.web.loop_monitor import LoopLagMonitor
from appliance.web.refusals import RefusalLog
from appliance.web.twilio_auth import SignatureChecker

if TYPE_CHECKING:
    from appliance.web.cluster import Cluster

log = logging.getLogger(__name__)

PENDING_CALL_S = 30.0  # a call answered by the webhook holds a slot this long before its stream


@dataclass
class CallSlots:
    """Admission control: live streams plus calls answered whose stream has not started yet."""

    limit: int
    active: set[str] = field(default_factory=set)
    pending: dict[str, float] = field(default_factory=dict)

    def count(self) -> int:
        now = time.monotonic()
        self.pending = {sid: t for sid, t in self.pending.items() if now - t < PENDING_CALL_S}
        return len(self.active) + len(self.pending)

    def reserve(self, call_sid: str) -> bool:
        if call_sid in self.active or call_sid in self.pending:
            return True
        if self.count() >= self.limit:
            return False
        self.pending[call_sid] = time.monotonic()
        return True

    def activate(self, call_sid: str) -> None:
        self.pending.pop(call_sid, None)
        self.active.add(call_sid)

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
    engines: Engines | None = None  # None until every model is loaded
    models: list[EngineInfo] = field(default_factory=list)
    load_error: str = ""
    draining: bool = False  # shutting down: live calls finish, new ones are refused
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    refusals: RefusalLog = field(
        default_factory=lambda: RefusalLog(logging.getLogger("appliance.web.refusals")))
    cluster: Cluster | None = None  # several boxes sharing admission through Redis
    sessions: dict[str, CallSession] = field(default_factory=dict)  # live, for the console

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            store=call_store(settings),
            twilio=TwilioCalls(settings.twilio_account_sid, settings.twilio_auth_token),
            signatures=SignatureChecker(settings),
            calls=CallSlots(limit=settings.max_calls),
            api_token=api_token(settings),
        )
