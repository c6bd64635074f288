"""The benchmark's callers' lines: a fixed set of short questions about the demo business (kb/).

Spoken once by the local Piper voice and cached as 8 kHz μ-law WAV files under the data dir,
keyed by a hash of the text and the voice, so every run sends byte-identical audio and only the
first run pays for synthesis. Call ``i`` says line ``i + t`` on its turn ``t``: concurrent
callers ask different things, and a rerun asks the same things in the same order.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from pathlib import Path

from appliance.caller.audio_source import AudioSourceError, Utterance, from_texts
from appliance.config import Settings
from appliance.core.audio import is_voiced

log = logging.getLogger(__name__)

# Answerable from kb/, none trips the transfer / end-call intent rules, 1.5-3 s of speech each.
LINES: tuple[str, ...] = (
    "What time do you open on Saturday?",
    "How much is a cleaning without insurance?",
    "Are you taking new patients?",
    "Do you take Delta Dental insurance?",
    "Where is your office?",
    "Can you see me today for a toothache?",
    "Are you open on Sunday?",
    "Is there parking near the office?",
)

# The warm-up call's line: not one a measured call says, so it warms no answer's cache.
WARMUP_LINE = "Do you have free Wi-Fi in the waiting room?"

RATE = 8000
SILENCE = b"\xff" * 160  # one 20 ms frame of μ-law silence
WAVE_FORMAT_MULAW = 7


def script(call_index: int, turns: int, lines: Sequence[str] = LINES) -> list[str]:
    """The lines call ``call_index`` speaks, one per turn."""
    return [lines[(call_index + t) % len(lines)] for t in range(turns)]


def cache_dir(settings: Settings) -> Path:
    return settings.data_path / "bench" / "utterances"


def voice_path(settings: Settings) -> Path:
    from appliance.models.locate import ModelMissing, default_path

    if settings.tts_voice:
        return Path(settings.tts_voice).expanduser()
    try:
        return default_path("tts")
    except ModelMissing as err:
        raise AudioSourceError(str(err)) from err


def cache_key(text: str, voice: Path) -> str:
    """Same text, same voice file → same key; a different voice or edited line → a new file."""
    try:
        size = voice.stat().st_size
    except OSError:
        size = -1
    return hashlib.sha256(f"{text}\n{voice.name}\n{size}".encode()).hexdigest()[:16]


def write_ulaw_wav(path: Path, ulaw: bytes) -> None:
    """A mono 8 kHz G.711 μ-law WAV (the stdlib ``wave`` module writes PCM only)."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, 1, RATE, RATE, 1, 8, 0)
    fact = struct.pack("<I", len(ulaw))
    pad = b"\0" if len(ulaw) % 2 else b""
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"fact" + struct.pack("<I", len(fact)) + fact
            + b"data" + struct.pack("<I", len(ulaw)) + ulaw + pad)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    tmp.replace(path)  # a crash mid-write never leaves a truncated cache entry


def read_ulaw_wav(path: Path) -> bytes:
    """The μ-law samples of a file written by :func:`write_ulaw_wav`; ValueError otherwise."""
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, fmt_ok = 12, False
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        chunk = data[pos + 8:pos + 8 + size]
        if kind == b"fmt ":
            code, channels, rate = struct.unpack("<HHI", chunk[:8])
            fmt_ok = (code, channels, rate) == (WAVE_FORMAT_MULAW, 1, RATE)
        elif kind == b"data":
            if not fmt_ok:
                raise ValueError(f"{path}: not mono 8 kHz μ-law")
            return chunk
        pos += 8 + size + (size % 2)
    raise ValueError(f"{path}: no data chunk")


def load(settings: Settings, texts: Sequence[str]) -> dict[str, Utterance]:
    """Each distinct text as an Utterance, from the cache or spoken now (and cached)."""
    voice = voice_path(settings)
    folder = cache_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Utterance] = {}
    missing: list[str] = []
    for text in dict.fromkeys(texts):
        path = folder / f"{cache_key(text, voice)}.wav"
        try:
            out[text] = Utterance.from_ulaw(text, read_ulaw_wav(path))
        except (OSError, ValueError):
            missing.append(text)
    if missing:
        log.info("synthesizing %d caller utterance(s) into %s", len(missing), folder)
        for utterance in from_texts(missing, voice, settings.tts_threads):
            write_ulaw_wav(folder / f"{cache_key(utterance.label, voice)}.wav",
                           b"".join(utterance.frames))
            out[utterance.label] = utterance
    return out


def speech(utterance: Utterance) -> bytes:
    """The utterance from its first voiced frame to its last: lines joined this way are one
    caller talking without a pause (the endless talker's voice)."""
    first = next(i for i, frame in enumerate(utterance.frames) if is_voiced(frame))
    return b"".join(utterance.frames[first:utterance.last_voiced + 1])
