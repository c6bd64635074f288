"""One call's share of the STT workers over time, so a caller who never stops talking cannot keep
a worker every call shares busy on its own words.

:class:`~appliance.core.workers.OneAtATime` bounds how many jobs a call has in the pool at once
(one); this bounds how much it has transcribed in the long run, counted in seconds of audio sent
to STT (what the work is proportional to, and the same however loaded the machine is, which a
count of worker-seconds is not). Measured with the bench's endless talker (``appliance bench
--talker``: sentences with a 0.3 s breath between, 2-core box shared with other work): every
breath ended a turn, the caller spoke on, and the carried-over audio was transcribed again — a
20 s transcription every 1.5 s (13 s of audio a second), 55 in 2.3 minutes, and the four good
calls' STT time p50 ×1.97 / p95 ×1.51 against the same run without the talker. Holding each call
to its share of worker *time* (the pool's workers over the calls) changed nothing there: each
20 s took 0.6 s, so the talker was within 0.4 of a worker and still cost the others as much.

The budget is a bucket of audio seconds: it refills at ``rate`` seconds of audio per second of
call and holds ``burst_s``. A normal caller has each utterance transcribed once or twice (at a
pause, then once more if they spoke on): well under its rate, so never held back. A call that
has used up its bucket waits before its next transcription until the bucket holds enough again.
"""

from __future__ import annotations

from appliance.core.clock import Clock


class AudioShare:
    def __init__(self, clock: Clock, rate: float, burst_s: float) -> None:
        self.clock = clock
        self.rate = rate  # seconds of audio transcribed per second of call, in the long run
        self.burst_s = burst_s
        self._level = burst_s
        self._last = clock.now()
        self.waited_s = 0.0  # how long this call's transcriptions were held back, in all

    def _refill(self) -> None:
        now = self.clock.now()
        self._level = min(self.burst_s, self._level + (now - self._last) * self.rate)
        self._last = now

    @property
    def debt_s(self) -> float:
        """Audio transcribed beyond the budget; the next transcription waits until it is repaid."""
        self._refill()
        return max(0.0, -self._level)

    async def take(self, audio_s: float) -> None:
        """Wait until this call is within its share (at once, unless it overspent), then charge
        ``audio_s`` to it. A request cancelled while it waits is never charged."""
        while (debt := self.debt_s) > 0:
            wait = debt / self.rate
            self.waited_s += wait
            await self.clock.sleep(wait)
        self._level -= audio_s
