"""Smart Turn v3 (pipecat-ai's BSD-2-Clause end-of-turn model) on onnxruntime alone.

The model is a Whisper-tiny-sized audio encoder with a classifier head: input ``input_features``
[N, 80, 800] (Whisper log-mel of exactly 8 s at 16 kHz), output ``logits`` [N, 1], already a
sigmoid probability that the turn is complete. The 8 s window holds the utterance's last 8 s,
zero-padded at the *start* (the end of speech is what matters) and normalized to zero mean and
unit variance before the spectrogram, as in the model's training pipeline. faster-whisper's numpy
FeatureExtractor computes the same log-mel (max difference 3e-7 against the reference, same
probability), so no extra dependency is needed.

One verdict (features included, one thread) on the 2-core dev box: 38 ms p50 at load 2, 132 ms
at load 6-7 (python -m appliance.bench.turn_taking).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

from appliance.core.audio import MODEL_RATE
from appliance.engines.base import EngineInfo
from appliance.engines.onnx import cpu_session

logger = logging.getLogger(__name__)

WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * MODEL_RATE
NORMALIZE_EPS = 1e-7


def model_input(audio16k: np.ndarray, features: FeatureExtractor) -> np.ndarray:
    """[1, 80, 800] log-mel of the last 8 s of ``audio16k``, padded at the front."""
    audio = np.asarray(audio16k, dtype=np.float32)[-WINDOW_SAMPLES:]
    audio = np.pad(audio, (WINDOW_SAMPLES - audio.size, 0))
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + NORMALIZE_EPS)
    return features(audio, padding=0)[np.newaxis].astype(np.float32)


class SmartTurn:
    """One shared session; ``completion`` is thread-safe (onnxruntime ``run`` is, and the feature
    extractor is read-only once built). One intra-op thread: the call runs once per caller pause,
    and on two cores a second thread only steals time from the calls' STT and LLM work."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self._session = cpu_session(path, threads)
        self._features = FeatureExtractor(chunk_length=WINDOW_S)
        self.info = EngineInfo(
            slot="turn",
            name=Path(path).stem,
            version=f"onnxruntime {ort.__version__}",
            path=str(path),
        )
        logger.info("loaded %s", path)

    def completion(self, audio16k: np.ndarray) -> float:
        (probability,) = self._session.run(
            None, {"input_features": model_input(audio16k, self._features)}
        )
        return float(np.asarray(probability).reshape(-1)[0])
