"""End-of-turn detection: a pure state machine fed (window seconds, speech probability).

Kept free of audio and I/O so every timing rule is unit-testable with synthetic scripts. A turn
model's judgement of a pause arrives as one more input (``verdict``), so the rules stay pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TurnEvent(enum.Enum):
    SPEECH_START = "speech_start"
    PAUSE = "pause"  # speech may be over: transcribe speculatively, ask the turn model
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    threshold: float = 0.5
    endpoint_silence_s: float = 0.4  # ends a turn when no turn model judges it
    min_speech_s: float = 0.2
    max_utterance_s: float = 20.0
    speculate_s: float = 0.2  # silence after which PAUSE fires (0 disables, unless turn_model)
    turn_model: bool = False  # a turn model judges each pause; its verdict picks the silence:
    complete_silence_s: float = 0.2  # judged complete
    incomplete_silence_s: float = 1.0  # judged unfinished, or not judged yet
    complete_threshold: float = 0.5

    @property
    def release(self) -> float:
        """Hysteresis: speech stays 'on' until the probability drops clearly below threshold."""
        return max(0.0, self.threshold - 0.15)

    @property
    def pause_s(self) -> float:
        """Silence after which PAUSE fires: the turn model needs it even without speculation."""
        if self.speculate_s or not self.turn_model:
            return self.speculate_s
        return self.complete_silence_s


class Endpointer:
    """Finds where a caller's utterance starts and ends.

    A start is confirmed only after ``min_speech_s`` of speech (so clicks and coughs do not
    barge in). An end needs ``endpoint_silence_s`` of silence, or ``max_utterance_s`` in all.
    With ``turn_model``, the silence needed depends on the verdict on the current pause: a
    complete utterance ends after ``complete_silence_s``; an unfinished one, or one still being
    judged, after ``incomplete_silence_s``. A *patient* endpointer waits for the longer of
    the two fixed silences at every end, whatever the turn model says (:meth:`set_patient`).
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.patient = False  # kept across utterances, until set otherwise
        self.reset()

    def reset(self) -> None:
        self.in_speech = False  # confirmed utterance in progress
        self.pauses = 0  # PAUSE events so far: identifies the pause a verdict is about
        self._voiced = False  # the current window counts as speech (with hysteresis)
        self._speech_s = 0.0  # speech accumulated in the candidate or utterance
        self._silence_s = 0.0  # trailing silence
        self._utterance_s = 0.0
        self._paused = False
        self._needed_s = self._undecided_s()  # trailing silence that ends the utterance
        self.ended_after_silence_s = 0.0  # trailing silence when the last utterance ended
        self.last_verdict: float | None = None  # the turn model's probability behind the end

    def _undecided_s(self) -> float:
        cfg = self.config
        if self.patient:
            return max(cfg.incomplete_silence_s, cfg.endpoint_silence_s)
        return cfg.incomplete_silence_s if cfg.turn_model else cfg.endpoint_silence_s

    def set_patient(self, patient: bool) -> None:
        """Wait for the longest silence at every end (a caller who talks over every answer,
        core/session.py), or go back to the usual rules. Applies to the utterance under way."""
        self.patient = patient
        if patient:
            self._needed_s = max(self._needed_s, self._undecided_s())

    def verdict(self, pause: int, probability: float | None) -> None:
        """The turn model's judgement of pause number ``pause`` (``None``: it failed, so fall
        back to the fixed ``endpoint_silence_s``). Ignored once the caller spoke on."""
        if self.patient or not (self.in_speech and self._paused and pause == self.pauses):
            return
        cfg = self.config
        self.last_verdict = probability
        if probability is None:
            self._needed_s = cfg.endpoint_silence_s
        elif probability >= cfg.complete_threshold:
            self._needed_s = cfg.complete_silence_s
        else:
            self._needed_s = cfg.incomplete_silence_s

    def feed(self, window_s: float, probability: float) -> TurnEvent | None:
        cfg = self.config
        self._voiced = probability >= (cfg.release if self._voiced else cfg.threshold)
        if self._voiced:
            self._speech_s += window_s
            self._silence_s = 0.0
            self._paused = False
            self._needed_s = self._undecided_s()
            self.last_verdict = None
        else:
            self._silence_s += window_s

        if not self.in_speech:
            if self._voiced and self._speech_s >= cfg.min_speech_s:
                self.in_speech = True
                self._utterance_s = self._speech_s
                return TurnEvent.SPEECH_START
            if self._silence_s >= cfg.endpoint_silence_s:
                self._speech_s = 0.0  # a blip too short to be speech
            return None

        self._utterance_s += window_s
        if self._silence_s >= self._needed_s or self._utterance_s >= cfg.max_utterance_s:
            self.ended_after_silence_s = self._silence_s
            self.in_speech = False
            self._speech_s = 0.0
            self._silence_s = 0.0
            self._paused = False
            self._needed_s = self._undecided_s()
            return TurnEvent.SPEECH_END
        if cfg.pause_s and not self._paused and self._silence_s >= cfg.pause_s:
            self._paused = True
            self.pauses += 1
            return TurnEvent.PAUSE
        return None
