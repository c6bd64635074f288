"""Speaking to a Media Streams caller: one reply as it is produced, fixed phrases, and the hold
phrase when an answer is slow.

A reply is a producer and a consumer. The producer reads the model's tokens and cuts them into
sentences; the consumer synthesizes each sentence and plays it while the model writes the next,
so the caller hears the first sentence long before the last one exists. Each stage is announced
as a stage event, and the turn's metrics are the times between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

from appliance.core.agent import Reply
from appliance.core.clock import Clock
from appliance.core.events import ErrorCode, StageError, StageEventType, stage
from appliance.core.playout import Playout
from appliance.core.recorder import CallRecorder
from appliance.core.sentences import SentenceChunker
from appliance.core.speculation import Ahead
from appliance.core.spoken import AgentTurn
from appliance.core.workers import TICKET, Ticket
from appliance.engines.base import NamesSpeaker, Tts
from appliance.store.metrics import SentenceVoice, TurnMetrics

log = logging.getLogger(__name__)


class Speaker:
    def __init__(self, tts: Tts, phrases: Mapping[str, bytes], playout: Playout,
                 recorder: CallRecorder, clock: Clock) -> None:
        self.tts = tts
        self.phrases = phrases  # pre-synthesized μ-law for fixed phrases
        self.playout = playout
        self.recorder = recorder
        self.clock = clock
        self.answered = False  # the current turn's reply has started to play

    async def reply(self, turn: AgentTurn, reply: Reply, voice_end: float,
                    ahead: asyncio.Task[Ahead | None] | None = None) -> None:
        """Speak ``reply`` sentence by sentence into ``turn``, timing the stages in its metrics.
        ``ahead``: its first piece, being synthesized since the caller's pause."""
        metrics = turn.metrics = turn.metrics or TurnMetrics()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        llm_start = self.recorder.stage(StageEventType.LLM_START)

        def ready(sentence: str) -> None:
            at = self.recorder.stage(StageEventType.SENTENCE_READY, text=sentence)
            if metrics.first_sentence_s is None:
                metrics.first_sentence_s = at - llm_start
            sentences.put_nowait(sentence)

        async def produce() -> None:
            chunker = SentenceChunker()
            try:
                with stage(ErrorCode.LLM_FAILED):
                    async for token in reply.tokens:
                        if metrics.llm_ttft_s is None:
                            at = self.recorder.stage(StageEventType.LLM_FIRST_TOKEN)
                            metrics.llm_ttft_s = at - llm_start
                        turn.text += token
                        for sentence in chunker.push(token):
                            ready(sentence)
                for sentence in chunker.flush():
                    ready(sentence)
            finally:
                reply.measure(metrics)
                sentences.put_nowait(None)

        producer = asyncio.create_task(produce())
        try:
            while (sentence := await sentences.get()) is not None:
                self.answered = True
                started = self.clock.now()
                early, ahead = await _spoken_ahead(ahead, sentence), None
                with _queued_behind(turn):
                    first = await self.synthesize(turn, sentence, early)
                provider = (self.tts.last_provider if isinstance(self.tts, NamesSpeaker)
                            else self.tts.info.name)
                metrics.tts_sentences.append(SentenceVoice(
                    provider, None if first is None else round(first - started, 3)))
                if first is not None:
                    self.recorder.said(sentence)
                    self.recorder.stage(StageEventType.TTS_FIRST_AUDIO, provider=provider)
                    if metrics.tts_first_audio_s is None:
                        metrics.tts_first_audio_s = first - started
                        metrics.v2v_s = first - voice_end
                        metrics.tts_provider = provider
            await producer
        finally:
            producer.cancel()
            if ahead is not None:
                ahead.cancel()
        turn.text = turn.text.strip()
        if not turn.pieces:
            raise StageError(ErrorCode.EMPTY_REPLY, "the model produced nothing to say")

    async def synthesize(self, turn: AgentTurn, text: str,
                         audio: AsyncIterator[bytes] | None = None) -> float | None:
        """Synthesize one sentence (unless its ``audio`` is on its way already) and play it;
        the time its first frame went out."""
        async with self.playout.lock:
            with stage(ErrorCode.TTS_FAILED):
                return await self.playout.stream(turn, text, audio or self.tts.synthesize(text))

    async def say(self, turn: AgentTurn, text: str, *, hold: bool = False) -> None:
        """Play a pre-synthesized phrase (greeting, apology, goodbye): no model in the way.

        A ``hold`` phrase is skipped if the answer started meanwhile, and its mark is named so
        that a listener can tell "please wait" from the end of an answer."""
        audio = self.phrases.get(text)
        if audio is None:
            log.warning("phrase not pre-synthesized; synthesizing now: %r", text)
            await self.synthesize(turn, text)
        else:
            async with self.playout.lock:
                if hold and self.answered:
                    return
                await self.playout.play(turn, text, audio, hold=hold)
        turn.text = text
        self.recorder.said(text)

    async def hold_on(self, phrase: str, at: float, turn: AgentTurn,
                      waiting: Callable[[], bool]) -> None:
        """At ``at`` (session clock), if the caller is ``waiting`` and no answer has started, say
        ``phrase`` rather than leave them in silence (a loaded box, a cold model)."""
        await self.clock.sleep(max(0.0, at - self.clock.now()))
        if not self.answered and waiting():
            await self.say(turn, phrase, hold=True)


async def _spoken_ahead(ahead: asyncio.Task[Ahead | None] | None,
                        sentence: str) -> AsyncIterator[bytes] | None:
    """The audio synthesized early for ``sentence``, if that is the piece it was made for."""
    if ahead is None:
        return None
    try:
        spoken = await ahead
    except Exception:  # an early voice that failed: the sentence is synthesized now
        return None
    if spoken is not None and spoken.text == sentence:
        return spoken.audio
    if spoken is not None:
        await spoken.audio.aclose()
    return None


@contextlib.contextmanager
def _queued_behind(turn: AgentTurn) -> Iterator[None]:
    """A sentence after the first is due when the caller runs out of the audio already sent,
    not now: in the shared TTS workers another caller's first sentence goes before it."""
    if turn.play_started is None or not turn.pieces:
        yield
        return
    left = sum(piece.seconds for piece in turn.pieces if not piece.played)
    token = TICKET.set(Ticket(turn.play_started + left))
    try:
        yield
    finally:
        TICKET.reset(token)
