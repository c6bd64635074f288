"""What a simulated call is asked to do and what it found: options, per-turn reports, and the
pairing of the caller's turns with the server's own record of the call."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.caller.audio_source import Utterance
from appliance.config import Settings, api_token, signing_token


def server_target(settings: Settings) -> dict[str, Any]:
    """Where and how a simulated caller reaches the server ``settings`` describe: its real
    address, the public URL Twilio would sign, the token to sign with, and the one that reads
    the call's record back."""
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    return {
        "base_url": f"http://{host}:{settings.port}",
        "public_base_url": settings.public_base_url,
        "auth_token": signing_token(settings),
        "account_sid": settings.twilio_account_sid,
        "api_token": api_token(settings),
    }


class CallFailed(RuntimeError):
    """The call could not be placed or the server broke the protocol; the message says which."""


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Everything one simulated call needs; independent of argparse so many can run at once."""

    base_url: str = "http://127.0.0.1:8080"  # where the server really listens
    public_base_url: str = "http://127.0.0.1:8080"  # what Twilio would call: the signed URL
    auth_token: str = ""
    account_sid: str = ""  # random "AC…" when empty
    api_token: str = ""  # bearer token for the call's record at /api/calls
    utterances: tuple[Utterance, ...] = ()
    caller: str = "+15555550100"
    callee: str = "+15555550199"
    interrupt_after_s: float | None = None  # barge into replies 1.. this long after they start
    dtmf: str = ""  # keys pressed once the greeting has played
    out: str | None = None  # WAV of what the caller heard
    turn_timeout_s: float = 20.0
    # Start no turn after this long in the call (the utterances not reached are left out of
    # the report): a soak runs for a duration, not a number of turns. None: say them all.
    stop_after_s: float | None = None
    greeting_quiet_s: float = 0.7
    reply_quiet_s: float = 1.0
    connect_timeout_s: float = 10.0
    fetch_record: bool = True
    record_settle_s: float = 0.3  # let the server finish the call's record after hang-up

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CallOptions:
        """Options that call the server ``settings`` describe, signed with its auth token."""
        return cls(**(server_target(settings) | overrides))


@dataclass(slots=True)
class TurnReport:
    said: str
    # Voice to voice: the caller's last voiced frame sent → the reply's first voiced frame
    # received (``v2v_s``) or played to the caller (``v2v_played_s``, later if audio was queued).
    v2v_s: float | None = None
    v2v_played_s: float | None = None
    # Barge-in reaction: the caller starts talking over this reply → its audio stops playing.
    barge_in_s: float | None = None
    clear_received: bool = False
    timed_out: bool = False
    transcript: str | None = None  # from the server's record: what it heard the caller say
    agent: str | None = None
    heard: str | None = None
    interrupted: bool | None = None

    @property
    def answered(self) -> bool:
        return self.v2v_s is not None


@dataclass(slots=True)
class CallReport:
    call_sid: str
    stream_sid: str = ""
    rejected: str | None = None  # the TwiML verbs, when the server did not connect the stream
    greeting_s: float | None = None  # ``start`` sent → first voiced greeting frame received
    greeting: str | None = None
    turns: list[TurnReport] = field(default_factory=list)
    ended_by_server: bool = False
    server: dict[str, Any] | None = None
    out: str | None = None

    @property
    def ok(self) -> bool:
        """Connected, greeted, and every turn got a voiced reply."""
        return self.rejected is None and self.greeting_s is not None and all(
            turn.answered for turn in self.turns
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "ok": self.ok,
            "rejected": self.rejected,
            "greeting_s": rounded(self.greeting_s),
            "greeting": self.greeting,
            "ended_by_server": self.ended_by_server,
            "turns": [
                {
                    "said": t.said,
                    "transcript": t.transcript,
                    "agent": t.agent,
                    "heard": t.heard,
                    "interrupted": t.interrupted,
                    "v2v_s": rounded(t.v2v_s),
                    "v2v_played_s": rounded(t.v2v_played_s),
                    "barge_in_s": rounded(t.barge_in_s),
                    "clear_received": t.clear_received,
                    "timed_out": t.timed_out,
                }
                for t in self.turns
            ],
            "server": self.server,
            "out": self.out,
        }


def rounded(value: float | None) -> float | None:
    """Seconds to the millisecond for reports; None stays None."""
    return None if value is None else round(value, 3)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


async def fetch_record(
    http: httpx.AsyncClient, base_url: str, call_sid: str, api_token: str
) -> dict[str, Any] | None:
    """The server's record of the call, or None when it cannot be had."""
    try:
        resp = await http.get(f"{base_url.rstrip('/')}/api/calls/{call_sid}",
                              headers={"Authorization": f"Bearer {api_token}"})
        data = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class ServerTurn:
    """The server's record of one caller turn: what it heard, what it said, how fast."""

    transcript: str | None = None
    agent: str | None = None  # every assistant turn after it, joined
    heard: str | None = None
    interrupted: bool | None = None  # None: no assistant turn followed
    metrics: dict[str, Any] | None = None  # the first reply's (its latencies)


def pair_turns(record: dict[str, Any], count: int) -> tuple[str | None, list[ServerTurn]]:
    """The greeting and, for each of ``count`` caller turns, the server's side of it: the n-th
    user turn in the record is utterance n, and the assistant turns up to the next are its reply.
    """
    turns = [ServerTurn() for _ in range(count)]
    greeting: list[str] = []
    current: ServerTurn | None = None
    users = 0
    for row in record.get("turns") or []:
        if not isinstance(row, dict):
            continue
        if row.get("role") == "user":
            current = turns[users] if users < count else None
            users += 1
            if current is not None:
                current.transcript = row.get("text")
        elif row.get("role") == "assistant":
            text, heard = row.get("text") or "", row.get("heard_text")
            if users == 0:
                greeting.append(text)
            elif current is not None:
                current.agent = " ".join(filter(None, (current.agent, text)))
                if heard is not None:
                    current.heard = " ".join(filter(None, (current.heard, heard)))
                current.interrupted = bool(current.interrupted) or bool(row.get("interrupted"))
                if current.metrics is None and isinstance(row.get("metrics"), dict):
                    current.metrics = row["metrics"]
    return " ".join(greeting) or None, turns


def apply_record(report: CallReport, record: dict[str, Any]) -> None:
    """Fill the caller's turns with the server's side of them."""
    report.greeting, server = pair_turns(record, len(report.turns))
    for turn, theirs in zip(report.turns, server, strict=True):
        turn.transcript, turn.agent = theirs.transcript, theirs.agent
        turn.heard, turn.interrupted = theirs.heard, theirs.interrupted
