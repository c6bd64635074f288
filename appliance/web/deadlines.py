"""The clocks a call socket runs against: start soon, keep the audio coming, end in time.

A socket that never sends its start (or setup) holds a connection and a worker's attention for
nothing; a Media Streams call whose audio stops is dead (Twilio sends 50 frames a second even
in silence); any call ends at the maximum length. :meth:`SocketDeadlines.expired` returns the
first deadline missed, on an injected :class:`Clock`, so tests move time by hand.
"""

from __future__ import annotations

from appliance.core.clock import Clock


class SocketDeadlines:
    def __init__(self, clock: Clock, *, start_s: float, max_call_s: float,
                 media_s: float | None) -> None:
        self.clock = clock
        self.start_s = start_s
        self.max_call_s = max_call_s
        self.media_s = media_s  # None: no audio on this socket (ConversationRelay)
        self.opened = clock.now()
        self.started: float | None = None
        self.last_media = self.opened

    def on_start(self) -> None:
        self.started = self.last_media = self.clock.now()

    def on_media(self) -> None:
        self.last_media = self.clock.now()

    def missed(self) -> tuple[str, float]:
        """The deadline missed ("" if none yet) and the seconds until the next one is due."""
        now = self.clock.now()
        if self.started is None:
            return self._due(f"no start within {self.start_s:g} s", self.opened + self.start_s,
                             now)
        dues = [(f"call longer than {self.max_call_s:g} s", self.started + self.max_call_s)]
        if self.media_s is not None:
            dues.append((f"no media for {self.media_s:g} s", self.last_media + self.media_s))
        reason, at = min(dues, key=lambda due: due[1])
        return self._due(reason, at, now)

    @staticmethod
    def _due(reason: str, at: float, now: float) -> tuple[str, float]:
        return (reason, 0.0) if now >= at else ("", at - now)

    async def expired(self) -> str:
        """Wait until a deadline passes; which one."""
        while True:
            reason, wait_s = self.missed()
            if reason:
                return reason
            await self.clock.sleep(wait_s)
