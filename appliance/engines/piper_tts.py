"""Local text-to-speech with Piper: one sentence at a time, off the event loop, as μ-law 8 kHz.

Piper synthesizes a sentence per step of its generator. Each step (ONNX inference plus the
resample to 8 kHz and μ-law encoding) runs in a worker thread, and the next step starts only
when the consumer asks for more, so a cancelled or abandoned reply costs at most the sentence
already in progress.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Executor
from importlib.metadata import version
from pathlib import Path

import numpy as np
from piper import AudioChunk, PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from appliance.core.audio import pcm16_to_ulaw8k, trim_leading_silence
from appliance.core.speakable import speakable
from appliance.engines.base import EngineInfo
from appliance.engines.onnx import cpu_session

logger = logging.getLogger(__name__)

# Piper peak-normalises each sentence; a little headroom keeps the resampler from clipping.
SYNTHESIS = SynthesisConfig(volume=0.9)
# VITS samples noise on every run: callers' prompts vary a little each time, which is natural.
# Test and benchmark audio must be the same every run, so it is synthesized without the noise.
REPRODUCIBLE = SynthesisConfig(volume=0.9, noise_scale=0.0, noise_w_scale=0.0)


def _next_ulaw(chunks: Iterator[AudioChunk], first: bool) -> bytes | None:
    """Synthesize the next sentence and encode it for the phone; None when the text is done.
    The ``first`` sentence of a piece starts at its first sound: the leading silence Piper
    puts there would only delay the reply (see ``trim_leading_silence``)."""
    chunk = next(chunks, None)
    if chunk is None:
        return None
    pcm = chunk.audio_int16_array
    if first:
        pcm = trim_leading_silence(pcm, chunk.sample_rate)
    return pcm16_to_ulaw8k(pcm, chunk.sample_rate)


class PiperTts:
    """A Piper voice (``.onnx`` with its ``.onnx.json`` beside it) shared by all calls.

    The session is built here rather than by ``PiperVoice.load`` so its thread count can be
    capped; ``run`` is thread-safe and Piper serialises espeak-ng phonemisation itself, so
    concurrent calls may synthesize at once.
    """

    def __init__(self, model_path: str | Path, threads: int = 1,
                 executor: Executor | None = None) -> None:
        model_path = Path(model_path)
        with open(f"{model_path}.json", encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        session = cpu_session(model_path, threads)
        self._voice = PiperVoice(session=session, config=config)
        self.sample_rate = config.sample_rate
        # Where the synthesis steps run: the shared TTS workers, which take the most urgent
        # call's sentence first (core/workers.py); None: asyncio's default threads.
        self._executor = executor
        self.info = EngineInfo(
            slot="tts",
            name=model_path.stem,
            version=f"piper-tts {version('piper-tts')}",
            path=str(model_path),
        )
        logger.info("loaded %s (%d Hz)", model_path, self.sample_rate)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """μ-law 8 kHz audio, one chunk per sentence of ``text`` (numbers said in words), the
        first without its leading silence."""
        chunks = iter(self._voice.synthesize(speakable(text), syn_config=SYNTHESIS))
        loop = asyncio.get_running_loop()
        first = True
        while (ulaw := await loop.run_in_executor(
                self._executor, functools.partial(
                    contextvars.copy_context().run, _next_ulaw, chunks, first))) is not None:
            first = False
            yield ulaw

    def synthesize_pcm(self, text: str) -> tuple[np.ndarray, int]:
        """Blocking: the whole of ``text`` as int16 at the voice's rate, identical on every run
        (test audio, benchmark prompts)."""
        parts = [c.audio_int16_array
                 for c in self._voice.synthesize(text, syn_config=REPRODUCIBLE)]
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        return audio, self.sample_rate
