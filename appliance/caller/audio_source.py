"""What the simulated caller says: WAV files or text spoken by the local Piper voice.

Everything becomes 8 kHz μ-law frames before the call starts, so nothing slow (file I/O,
synthesis, resampling) happens while the call's 20 ms clock is running.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.core.audio import frames, is_voiced, pcm16_to_ulaw8k


class AudioSourceError(ValueError):
    """An utterance cannot be prepared; the message names the file or voice."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One caller turn, ready to send: 20 ms μ-law frames plus where the speech ends."""

    label: str  # what the caller says, or the WAV's path
    frames: tuple[bytes, ...]
    last_voiced: int  # index of the last voiced frame: voice-to-voice latency starts there

    @classmethod
    def from_ulaw(cls, label: str, ulaw: bytes) -> Utterance:
        chunks = tuple(frames(ulaw))
        voiced = [i for i, frame in enumerate(chunks) if is_voiced(frame)]
        if not voiced:
            raise AudioSourceError(f"{label}: no voiced audio in the utterance")
        return cls(label, chunks, voiced[-1])

    @classmethod
    def from_pcm(cls, label: str, samples: np.ndarray, rate: int) -> Utterance:
        return cls.from_ulaw(label, pcm16_to_ulaw8k(samples, rate))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV of any rate, width and channel count → mono int16 samples and the rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as err:
        raise AudioSourceError(f"cannot read {path} as a PCM WAV file: {err}") from err
    if width == 1:
        pcm = (np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        pcm = np.frombuffer(data, "<i2")
    elif width == 3:  # keep the top 16 bits of each little-endian 24-bit sample
        pcm = np.frombuffer(np.frombuffer(data, np.uint8).reshape(-1, 3)[:, 1:].tobytes(), "<i2")
    elif width == 4:
        pcm = (np.frombuffer(data, "<i4") >> 16).astype(np.int16)
    else:
        raise AudioSourceError(f"{path}: unsupported sample width {width * 8} bits")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).astype(np.int32).mean(axis=1).astype(np.int16)
    return pcm, rate


def from_wav(path: str | Path) -> Utterance:
    samples, rate = read_wav(path)
    return Utterance.from_pcm(str(path), samples, rate)


def from_texts(
    texts: Sequence[str], voice: str | Path | None = None, threads: int = 1
) -> list[Utterance]:
    """Speak ``texts`` with one Piper voice, loaded once (the default voice unless ``voice``)."""
    from appliance.engines.piper_tts import PiperTts  # heavy: only when text is to be spoken
    from appliance.models.locate import ModelMissing, default_path

    try:
        path = Path(voice) if voice else default_path("tts")
    except ModelMissing as err:
        raise AudioSourceError(str(err)) from err
    if not path.exists():
        raise AudioSourceError(f"Piper voice not found: {path}")
    tts = PiperTts(path, threads)
    out = []
    for text in texts:
        samples, rate = tts.synthesize_pcm(text)
        out.append(Utterance.from_pcm(text, samples, rate))
    return out
