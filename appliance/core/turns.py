"""End-of-turn detection: a pure state machine fed (window seconds, speech probability).

Kept free of audio and I/O so every timing rule is unit-testable with synthetic scripts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TurnEvent(enum.Enum):
    SPEECH_START = "speech_start"
    PAUSE = "pause"  # speech may be over: a good moment to start transcribing speculatively
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    threshold: float = 0.5
    endpoint_silence_s: float = 0.4
    min_speech_s: float = 0.2
    max_utterance_s: float = 20.0
    speculate_s: float = 0.2  # silence after which PAUSE fires (0 disables)

    @property
    def release(self) -> float:
        """Hysteresis: speech stays 'on' until the probability drops clearly below threshold."""
        return max(0.0, self.threshold - 0.15)


class Endpointer:
    """Finds where a caller's utterance starts and ends.

    A start is confirmed only after ``min_speech_s`` of speech (so clicks and coughs do not
    barge in); an end needs ``endpoint_silence_s`` of silence, or ``max_utterance_s`` in all.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.in_speech = False  # confirmed utterance in progress
        self._voiced = False  # the current window counts as speech (with hysteresis)
        self._speech_s = 0.0  # speech accumulated in the candidate or utterance
        self._silence_s = 0.0  # trailing silence
        self._utterance_s = 0.0
        self._paused = False
        self.ended_after_silence_s = 0.0  # trailing silence when the last utterance ended

    def feed(self, window_s: float, probability: float) -> TurnEvent | None:
        cfg = self.config
        self._voiced = probability >= (cfg.release if self._voiced else cfg.threshold)
        if self._voiced:
            self._speech_s += window_s
            self._silence_s = 0.0
            self._paused = False
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
        if self._silence_s >= cfg.endpoint_silence_s or self._utterance_s >= cfg.max_utterance_s:
            self.ended_after_silence_s = self._silence_s
            self.in_speech = False
            self._speech_s = 0.0
            self._silence_s = 0.0
            self._paused = False
            return TurnEvent.SPEECH_END
        if cfg.speculate_s and not self._paused and self._silence_s >= cfg.speculate_s:
            self._paused = True
            return TurnEvent.PAUSE
        return None
