"""The caller's side of the line: μ-law frames in, utterances out.

Owns one call's audio state — the streaming upsampler, the VAD's recurrent state, the end-of-turn
logic and the audio buffers (pre-roll, the utterance in progress) — and turns frames into three
moments the session acts on: speech started, the caller paused, the utterance ended. At each
pause a turn model (if any) judges, in its own worker, whether the caller sounds finished; its
verdict tells the endpointer how much more silence to wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from appliance.config import Settings
from appliance.core.audio import MODEL_RATE, Ulaw8kTo16k
from appliance.core.turns import EndpointConfig, Endpointer, TurnEvent
from appliance.core.workers import run_in
from appliance.engines.base import TurnDetector, Vad

log = logging.getLogger(__name__)

FRAME_S = 0.02
MIN_UTTERANCE_SAMPLES = int(MODEL_RATE * 0.1)  # shorter than this is a click, not words


@dataclass(frozen=True, slots=True)
class Heard:
    event: TurnEvent
    audio: np.ndarray | None = None  # PAUSE, SPEECH_END: everything said so far (16 kHz)
    silence_s: float = 0.0  # SPEECH_END: trailing silence it waited for


def endpoint_config(settings: Settings, turn_model: bool) -> EndpointConfig:
    """The end-of-turn rules the settings ask for (``turn_model``: a turn model is loaded)."""
    return EndpointConfig(
        threshold=settings.vad_threshold,
        endpoint_silence_s=settings.endpoint_silence_ms / 1000,
        min_speech_s=max(settings.min_speech_ms, settings.barge_in_ms) / 1000,
        max_utterance_s=settings.max_utterance_s,
        speculate_s=settings.speculative_stt_ms / 1000,
        turn_model=turn_model,
        complete_silence_s=settings.turn_complete_ms / 1000,
        incomplete_silence_s=settings.turn_incomplete_ms / 1000,
        complete_threshold=settings.turn_threshold,
    )


class Listener:
    def __init__(self, settings: Settings, vad: Vad, vad_pool: ThreadPoolExecutor,
                 turn: TurnDetector | None = None,
                 turn_pool: ThreadPoolExecutor | None = None) -> None:
        self._vad = vad.stream()
        self._vad_pool = vad_pool
        self._turn = turn if settings.turn_model else None
        self._turn_pool = turn_pool or vad_pool
        self._judging: asyncio.Future[float] | None = None  # the turn model on the last pause
        self._judged_pause = 0
        self._upsampler = Ulaw8kTo16k()
        self.endpointer = Endpointer(endpoint_config(settings, self._turn is not None))
        self._preroll_s = settings.preroll_ms / 1000
        keep_s = self._preroll_s + self.endpointer.config.min_speech_s + 0.5
        self._recent: deque[np.ndarray] = deque(maxlen=int(keep_s / FRAME_S) + 1)
        self._utterance: list[np.ndarray] = []
        self._carry = np.zeros(0, np.float32)
        # The hard ceiling on what one call buffers and hands to STT: one maximal utterance.
        self.max_samples = int(settings.max_utterance_s * MODEL_RATE)

    def carry_over(self, audio: list[np.ndarray]) -> None:
        """Prepend ``audio`` to the next utterance: the caller kept talking before we answered.
        Only the latest :attr:`max_samples` are kept, however long they kept talking."""
        self._carry = np.concatenate(audio)[-self.max_samples:] if audio else self._carry[:0]

    @property
    def buffered_samples(self) -> int:
        """Audio this call holds for the utterance in progress (carry-over included)."""
        return len(self._carry) + sum(len(chunk) for chunk in self._utterance)

    def _process(self, ulaw: bytes) -> tuple[np.ndarray, list[float]]:
        """Resample and run the VAD: the per-frame DSP, in the VAD worker, off the event loop."""
        audio = self._upsampler.process(ulaw)
        return audio, self._vad.probabilities(audio)

    async def hear(self, ulaw: bytes) -> list[Heard]:
        """One frame in; the turn-taking moments it completes out. DSP and VAD run in a worker
        (one frame at a time per call: the audio loop awaits each)."""
        audio, probabilities = await run_in(self._vad_pool, self._process, ulaw)
        self._recent.append(audio)
        if self.endpointer.in_speech:
            self._utterance.append(audio)
            if len(self._carry) and (over := self.buffered_samples - self.max_samples) > 0:
                self._carry = self._carry[over:]  # the ceiling holds while they talk on
        window_s = self._vad.window_samples / MODEL_RATE
        self._take_verdict()
        out: list[Heard] = []
        for probability in probabilities:
            event = self.endpointer.feed(window_s, probability)
            if event is TurnEvent.SPEECH_START:
                keep_s = self.endpointer.config.min_speech_s + self._preroll_s
                self._utterance = list(self._recent)[-max(1, int(keep_s / FRAME_S)):]
                out.append(Heard(event))
            elif event is TurnEvent.PAUSE:
                so_far = self._so_far()
                self._judge(so_far)
                out.append(Heard(event, so_far))
            elif event is TurnEvent.SPEECH_END:
                self._drop_judging()
                audio_so_far = self._so_far()
                self._utterance, self._carry = [], self._carry[:0]
                out.append(Heard(event, audio_so_far, self.endpointer.ended_after_silence_s))
        return out

    @property
    def patient(self) -> bool:
        return self.endpointer.patient

    def be_patient(self, patient: bool) -> None:
        """End turns only after the longest silence, without asking the turn model (whose
        verdict would not count): see ``CallSession._spoke_over``."""
        self.endpointer.set_patient(patient)
        if patient:
            self._drop_judging()

    def _judge(self, audio: np.ndarray) -> None:
        """Ask the turn model about this pause, off the event loop; the answer is picked up by
        the next frame (20 ms later at most), so listening never waits for it."""
        self._drop_judging()
        if self._turn is None or self.patient:
            return
        self._judged_pause = self.endpointer.pauses
        self._judging = asyncio.ensure_future(
            run_in(self._turn_pool, self._turn.completion, audio))
        self._judging.add_done_callback(_retrieve)

    def _take_verdict(self) -> None:
        judging = self._judging
        if judging is None or not judging.done():
            return
        self._judging = None
        if (error := judging.exception()) is not None:
            log.warning("turn model failed (%s: %s); using the fixed end-of-turn silence",
                        type(error).__name__, error)
            self.endpointer.verdict(self._judged_pause, None)
        else:
            self.endpointer.verdict(self._judged_pause, judging.result())

    def _drop_judging(self) -> None:
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None

    def _so_far(self) -> np.ndarray:
        """The utterance with its carry-over: never more than :attr:`max_samples` (the carry's
        oldest audio goes first)."""
        if not self._utterance:
            return self._carry.copy()
        audio = np.concatenate([self._carry, *self._utterance])
        return audio[-self.max_samples:]


def _retrieve(future: asyncio.Future[float]) -> None:
    """Mark a verdict's error as seen, so a verdict dropped (the caller spoke on) never makes
    asyncio warn; a verdict that is used has its error logged by ``_take_verdict``."""
    if not future.cancelled():
        future.exception()
