"""ElevenLabs first, Piper behind it: the caller always hears the agent, cloud or not.

Each sentence goes to ElevenLabs with a tight first-byte deadline; if no audio comes in time, or
the request fails, Piper speaks that sentence. A stream that breaks mid-sentence is finished by
Piper from the word that was playing. A circuit breaker stops paying the deadline on every
sentence while ElevenLabs is down: after N failures in a row it is skipped for a cool-down, then
one sentence tries it again. A rejected key switches it off until the appliance is reconfigured;
a 429 backs off for as long as the server asks. One log line per change of state, never per
sentence, and never the key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from contextlib import aclosing
from contextvars import ContextVar

from appliance.config import Settings
from appliance.core.audio import TELEPHONE_RATE
from appliance.engines.base import Closable, EngineInfo, Tts, Warmable
from appliance.engines.breaker import CircuitBreaker
from appliance.engines.elevenlabs_tts import (
    AuthError,
    ElevenLabsError,
    ElevenLabsTimeout,
    ElevenLabsTts,
    RateLimited,
)

log = logging.getLogger(__name__)

PRIMARY, FALLBACK = "elevenlabs", "piper"
DEFAULT_CHARS_PER_S = 15.0  # ElevenLabs' pace before any sentence calibrates it
PREWARM_TIMEOUT_S = 10.0  # start-up phrases are not latency-critical

# Per task, so concurrent calls sharing one engine each read their own last sentence's numbers.
_last_provider: ContextVar[str] = ContextVar("tts_last_provider")


def unspoken(text: str, spoken_s: float, chars_per_s: float) -> str:
    """What is left of ``text`` after ``spoken_s`` of speech, from the word then playing.

    Repeating half a word sounds better than skipping one, so the cut is at the start of the word
    the estimate lands in; with nothing heard, it is the whole sentence.
    """
    said = spoken_s * chars_per_s
    start = 0
    for word in re.finditer(r"\S+", text):
        if word.start() > said:
            break
        start = word.start()
    return text[start:]


def describe(err: BaseException) -> str:
    if isinstance(err, ElevenLabsError):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class FailoverTts:
    """Implements ``Tts`` over a cloud primary and a local fallback, sentence by sentence."""

    def __init__(self, primary: Tts, fallback: Tts, *, first_byte_s: float,
                 breaker: CircuitBreaker) -> None:
        self._primary = primary
        self._fallback = fallback
        self._first_byte_s = first_byte_s
        self._stall_s = first_byte_s  # mid-stream: the least wait, and Piper's head start
        self._breaker = breaker
        self._voice = PRIMARY  # who spoke last, across calls: a change of it is logged
        # Changes of voice by (from, to, reason), for /metrics: counted where they are logged.
        self.switches: Counter[tuple[str, str, str]] = Counter()
        self._chars_per_s = DEFAULT_CHARS_PER_S
        self._phrase_texts: list[str] = []
        self._cache: dict[tuple[str, str], bytes] = {}
        self._warming: asyncio.Task[None] | None = None
        p, f = primary.info, fallback.info
        self.info = EngineInfo(slot="tts", name=f"{p.name}+{f.name}",
                               version=f"{p.version}; {f.version}", path=f.path, device=f.device)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def last_provider(self) -> str:
        """Who spoke this task's last sentence (``elevenlabs+piper``: Piper finished it)."""
        return _last_provider.get(self.provider_in_use)

    @property
    def provider_in_use(self) -> str:
        return PRIMARY if self._breaker.closed else FALLBACK

    # --- fixed phrases --------------------------------------------------------------------

    async def prewarm(self, texts: Iterable[str]) -> Mapping[str, bytes]:
        """Synthesize fixed phrases with both voices; returns a live view for ``Engines.phrases``.

        A primary failure here means ElevenLabs is unusable right now (no network, bad key), so it
        opens the breaker at once: the first caller hears Piper from the first word.
        """
        texts = [t for t in dict.fromkeys(texts) if t not in self._phrase_texts]
        self._phrase_texts.extend(texts)
        for text in texts:
            self._cache[(FALLBACK, text)] = await _collect(self._fallback.synthesize(text))
        await self._warm_primary(texts, at_startup=True)
        return PhraseView(self)

    def phrase(self, text: str) -> bytes | None:
        """Cached audio of ``text`` in the voice in use, else Piper's (never a network wait)."""
        return self._cache.get((self.provider_in_use, text)) or self._cache.get((FALLBACK, text))

    async def _warm_primary(self, texts: list[str], *, at_startup: bool = False) -> None:
        for text in texts:
            if (PRIMARY, text) in self._cache:
                continue
            if not self._breaker.allow():
                return
            try:
                async with asyncio.timeout(PREWARM_TIMEOUT_S):
                    audio = await _collect(self._primary.synthesize(text))
            except asyncio.CancelledError:
                self._breaker.abandon()
                raise
            except Exception as err:
                self._failed(err, at_startup=at_startup)
                return
            self._succeeded()
            if audio:
                self._cache[(PRIMARY, text)] = audio

    def _warm_missing(self) -> None:
        """ElevenLabs is back: fetch the phrases it lacks, in the background."""
        missing = [t for t in self._phrase_texts if (PRIMARY, t) not in self._cache]
        if missing and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._warm_primary(missing))

    # --- speech ---------------------------------------------------------------------------

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """μ-law 8 kHz for ``text``: a cached phrase, else ElevenLabs, finished by Piper if it
        fails."""
        cached = self._cache.get((self.provider_in_use, text))
        if cached is not None:
            _last_provider.set(self.provider_in_use)
            yield cached
            return
        spoken = 0
        if self._breaker.allow():
            audio: list[bytes] = []
            try:
                async with aclosing(self._primary_audio(text)) as stream:
                    async for chunk in stream:
                        if not spoken:
                            _last_provider.set(PRIMARY)
                        spoken += len(chunk)
                        audio.append(chunk)
                        yield chunk
                if not spoken:
                    raise ElevenLabsError("empty audio")
            except Exception as err:
                self._failed(err)
            except BaseException:  # cancelled (barge-in) or closed: no verdict on ElevenLabs
                self._breaker.abandon()
                raise
            else:
                if self._succeeded(text, audio):
                    self._warm_missing()
                return
        rest = unspoken(text, spoken / TELEPHONE_RATE, self._chars_per_s) if spoken else text
        first = True
        async for chunk in self._fallback.synthesize(rest):
            if first:
                first = False
                _last_provider.set(f"{PRIMARY}+{FALLBACK}" if spoken else FALLBACK)
            yield chunk

    async def _primary_audio(self, text: str) -> AsyncGenerator[bytes, None]:
        """The primary's chunks; no audio within the deadline (first byte, or a stall) fails.

        Mid-stream, the deadline grows with the audio already sent ahead of the caller's ear
        (ElevenLabs streams faster than real time): a pause is only a failure once waiting longer
        would leave too little of that audio for Piper to take over without a gap.
        """
        async with aclosing(self._primary.synthesize(text)) as stream:  # type: ignore[type-var]
            first_at, received_s = 0.0, 0.0
            while True:
                if not received_s:
                    deadline, what = self._first_byte_s, "no audio within"
                else:
                    ahead_s = received_s - (time.monotonic() - first_at)
                    deadline = max(self._stall_s, ahead_s - self._stall_s)
                    what = "stream stalled for"
                try:
                    async with asyncio.timeout(deadline):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ElevenLabsTimeout(f"{what} {deadline * 1000:.0f} ms") from None
                if chunk:
                    first_at = first_at or time.monotonic()
                    received_s += len(chunk) / TELEPHONE_RATE
                    yield chunk

    def _succeeded(self, text: str = "", audio: list[bytes] | None = None) -> bool:
        """Close the breaker, learn ElevenLabs' pace, keep a phrase; True if it was not closed."""
        back = self._breaker.success()
        if back or self._voice != PRIMARY:
            log.info("ElevenLabs answers again: speaking with ElevenLabs")
            self._switch(PRIMARY, "recovered")
        if audio:
            seconds = sum(map(len, audio)) / TELEPHONE_RATE
            if len(text) >= 20 and seconds > 0.5:  # short ones are mostly silence padding
                pace = min(30.0, max(8.0, len(text) / seconds))
                self._chars_per_s = 0.8 * self._chars_per_s + 0.2 * pace
            if text in self._phrase_texts:
                self._cache[(PRIMARY, text)] = b"".join(audio)
        return back

    def _failed(self, err: Exception, *, at_startup: bool = False) -> None:
        """Update the breaker and log the change of state, if any, in one line."""
        reason = describe(err)
        breaker = self._breaker
        why = ("rejected-key" if isinstance(err, AuthError) else
               "rate-limited" if isinstance(err, RateLimited) else
               "timeout" if isinstance(err, ElevenLabsTimeout) else "error")
        if isinstance(err, AuthError):
            if breaker.disable():
                log.error("ElevenLabs rejected the API key (%s): ElevenLabs is off until "
                          "ELEVENLABS_API_KEY is fixed and the appliance restarted; speaking "
                          "with Piper", reason)
        elif isinstance(err, RateLimited):
            if breaker.back_off(err.retry_after):
                log.warning("ElevenLabs rate-limited (%s): backing off %.0f s; speaking with "
                            "Piper", reason, breaker.retry_in)
        elif breaker.failure(trip=at_startup):
            when = "at start-up" if at_startup else f"after {breaker.failures} failure(s) in a row"
            log.warning("ElevenLabs unavailable %s (%s): speaking with Piper, trying again in "
                        "%.0f s", when, reason, breaker.retry_in)
        elif self._voice != FALLBACK:
            log.warning("ElevenLabs failed (%s): Piper speaks until it answers again", reason)
        else:
            log.debug("ElevenLabs failed again (%s)", reason)
        self._switch(FALLBACK, why)

    def _switch(self, voice: str, reason: str) -> None:
        if voice != self._voice:
            self.switches[(self._voice, voice, reason)] += 1
            self._voice = voice

    async def warm(self) -> None:
        """At call start, while the greeting plays: have ElevenLabs' connection ready."""
        if self._breaker.closed and isinstance(self._primary, Warmable):
            await self._primary.warm()

    async def aclose(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        if isinstance(self._primary, Closable):
            await self._primary.aclose()


class PhraseView(Mapping[str, bytes]):
    """``Engines.phrases`` that always answers in the voice currently in use."""

    def __init__(self, tts: FailoverTts) -> None:
        self._tts = tts

    def __getitem__(self, text: str) -> bytes:
        audio = self._tts.phrase(text)
        if audio is None:
            raise KeyError(text)
        return audio

    def __iter__(self) -> Iterator[str]:
        return iter(self._tts._phrase_texts)

    def __len__(self) -> int:
        return len(self._tts._phrase_texts)


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def with_cloud_voice(settings: Settings, local: Tts) -> Tts:
    """ElevenLabs in front of ``local`` when a key is set; otherwise ``local`` alone, said once."""
    if not settings.elevenlabs_api_key:
        log.info("no ElevenLabs API key (ELEVENLABS_API_KEY): speaking with %s", local.info.name)
        return local
    breaker = CircuitBreaker(settings.elevenlabs_failures_to_open, settings.elevenlabs_cooldown_s)
    return FailoverTts(ElevenLabsTts.from_settings(settings), local,
                       first_byte_s=settings.elevenlabs_first_byte_ms / 1000, breaker=breaker)
