"""The checks, one function each, run inside the doctor's child process.

Each loads one engine exactly as serving does and exercises it once on a tiny input. A check
returns ``(detail, device)``; any exception is the check's failure.
"""

from __future__ import annotations

import asyncio
import sqlite3
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.config import Settings
from appliance.engines.base import ChatMessage
from appliance.models.resolve import resolve_models

CLIP = Path(__file__).with_name("hello.wav")  # "Hello, what time do you open tomorrow?" (Piper)

Check = Callable[[Settings], tuple[str, str]]


def clip16k() -> np.ndarray:
    """The shipped clip as 16 kHz float32 mono."""
    with wave.open(str(CLIP), "rb") as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def check_vad(settings: Settings) -> tuple[str, str]:
    from appliance.engines.silero_vad import SileroVad

    vad = SileroVad(resolve_models(settings).vad)
    probs = vad.stream().probabilities(clip16k()[:16000])
    return f"{len(probs)} windows on 1 s of speech, peak p={max(probs):.2f}", vad.info.device


def check_turn(settings: Settings) -> tuple[str, str]:
    from appliance.engines.smart_turn import SmartTurn

    turn = SmartTurn(resolve_models(settings).turn)
    probability = turn.completion(clip16k())
    return f"end-of-turn p={probability:.2f} on a finished question", turn.info.device


def check_stt(settings: Settings) -> tuple[str, str]:
    from appliance.wiring import load_whisper

    stt = load_whisper(settings, resolve_models(settings).stt)
    text = stt.transcribe(clip16k()).text
    if not text:
        raise RuntimeError("transcribed the shipped clip as silence")
    return f"heard {text!r}", stt.info.device


def check_llm(settings: Settings) -> tuple[str, str]:
    from appliance.engines.llama_cpp_llm import LlamaCppLlm

    llm = LlamaCppLlm(resolve_models(settings).llm, instances=1, threads=settings.llm_threads,
                      n_ctx=512, gpu_layers=settings.llm_gpu_layers, device=settings.device)
    stream = llm.stream_chat([ChatMessage("user", "Say hello.")], max_tokens=1, temperature=0.0)
    token = next(iter(stream), None)
    if token is None:
        raise RuntimeError("the model produced no token")
    return f"first token {token!r}", llm.info.device


def check_tts(settings: Settings) -> tuple[str, str]:
    from appliance.engines.piper_tts import PiperTts

    tts = PiperTts(resolve_models(settings).tts, threads=settings.tts_threads)

    async def one_word() -> bytes:
        return b"".join([chunk async for chunk in tts.synthesize("Hello.")])

    audio = asyncio.run(one_word())
    if not audio:
        raise RuntimeError("synthesized no audio")
    return f"{len(audio) / 8000:.2f} s of audio for one word", tts.info.device


def check_embed(settings: Settings) -> tuple[str, str]:
    from appliance.kb.embedding import embedder_from_settings

    vector = embedder_from_settings(settings)(["What time do you open?"])[0]
    return f"{len(vector)}-dimensional embedding", "cpu"


def check_store(settings: Settings) -> tuple[str, str]:
    """Takes the write lock and lets go: proves the log is writable without touching a row
    (opening the store would mark a running server's live calls abandoned)."""
    path = settings.db_path
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    return f"{path} writable (schema v{version})", "disk"


def check_kb(settings: Settings) -> tuple[str, str]:
    from appliance.kb.store import ChromaKnowledgeBase

    kb = ChromaKnowledgeBase.open(settings)
    count = kb.count()
    if count:
        kb.search("opening hours", 1)
    return f"{count} chunks readable at {kb.info.path}", "disk"


CHECKS: dict[str, Check] = {
    "vad": check_vad,
    "turn": check_turn,
    "stt": check_stt,
    "llm": check_llm,
    "tts": check_tts,
    "embed": check_embed,
    "store": check_store,
    "kb": check_kb,
}
