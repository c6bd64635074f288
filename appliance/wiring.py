"""The composition root: the one place that names concrete engine classes and builds, from
settings, the shared engines every call uses.

It sits above ``core`` and ``engines`` (it imports both) so that neither imports the other's
orchestration: engines know only their Protocols, core only those Protocols.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import Settings
from appliance.core.agent import Agent, Tool
from appliance.core.session import Engines
from appliance.core.workers import Workers
from appliance.engines.base import KnowledgeBase, Llm, PhraseCache, Stt, Tts, TurnDetector, Vad
from appliance.models.resolve import llm_tool_format, resolve_models

if TYPE_CHECKING:
    from appliance.engines.faster_whisper_stt import FasterWhisperStt

log = logging.getLogger(__name__)


def fixed_phrases(settings: Settings, agent: Agent) -> list[str]:
    """Phrases spoken without a model in the way, synthesized once at start-up."""
    return [settings.greeting_text, settings.apology, settings.hold_phrase,
            agent.phrase_for(Tool.END_CALL), agent.phrase_for(Tool.TRANSFER), agent.unknown_answer]


async def synthesize_phrases(tts: Tts, texts: list[str]) -> Mapping[str, bytes]:
    if isinstance(tts, PhraseCache):
        return await tts.prewarm(texts)  # cached per voice; answers in the voice in use (failover)
    phrases: dict[str, bytes] = {}
    for text in texts:
        phrases[text] = b"".join([chunk async for chunk in tts.synthesize(text)])
    return phrases


def open_knowledge_base(settings: Settings) -> KnowledgeBase | None:
    """The business's documents, ingesting ``kb_dir`` first if nothing was ingested yet."""
    from appliance.kb.embedding import embedder_from_settings
    from appliance.kb.hybrid import HybridKnowledgeBase
    from appliance.kb.store import ChromaKnowledgeBase, ingest_paths

    embedder = embedder_from_settings(settings)
    kb = ChromaKnowledgeBase.open(settings, embedder)
    if kb.count() == 0 and Path(settings.kb_dir).is_dir():
        log.info("knowledge base is empty: ingesting %s", settings.kb_dir)
        report = ingest_paths(settings, [settings.kb_dir], embedder=embedder, progress=False)
        for source, reason in report.skipped:  # one bad document never stops start-up
            log.warning("knowledge base: skipped %r: %.300s", source, reason)
    if kb.count() == 0:
        log.warning("knowledge base is empty: answers are not grounded (run `appliance kb ingest`)")
        return None
    return HybridKnowledgeBase(kb, kb.all_chunks())


def load_llm(settings: Settings, path: Path | None = None, instances: int = 0) -> Llm:
    from appliance.engines.failover_llm import with_model_server
    from appliance.engines.llama_cpp_llm import LlamaCppLlm

    return with_model_server(settings, lambda: LlamaCppLlm(
        path or resolve_models(settings).llm, instances=instances or settings.llm_instances,
        threads=settings.llm_threads, batch_threads=settings.llm_batch_threads,
        n_ctx=settings.llm_context, gpu_layers=settings.llm_gpu_layers, device=settings.device,
        tool_format=llm_tool_format(settings)))


def load_turn_detector(settings: Settings, path: Path) -> TurnDetector | None:
    """The end-of-turn model, or None when ``APPLIANCE_TURN_MODEL`` is off."""
    if not settings.turn_model:
        return None
    from appliance.engines.smart_turn import SmartTurn

    return SmartTurn(path)


def load_whisper(settings: Settings, path: Path, instances: int = 1) -> FasterWhisperStt:
    """The local Whisper as the settings ask for it (serving, the doctor)."""
    from appliance.engines.faster_whisper_stt import FasterWhisperStt

    return FasterWhisperStt(path, device=settings.device, threads=settings.stt_threads,
                            instances=instances, beam_size=settings.stt_beam_size,
                            language=settings.stt_language, pad_s=settings.stt_pad_ms / 1000)


def load_blocking(settings: Settings) -> tuple[Workers, Agent, Vad, Stt, Tts, TurnDetector | None]:
    """Load every model (blocking; run in a thread at start-up)."""
    from appliance.engines.failover_tts import with_cloud_voice
    from appliance.engines.openai_stt import with_stt_server
    from appliance.engines.piper_tts import PiperTts
    from appliance.engines.silero_vad import SileroVad

    paths = resolve_models(settings)
    started = time.monotonic()
    workers = Workers.sized(settings.llm_instances, settings.max_calls, settings.stt_instances)
    vad = SileroVad(paths.vad)
    stt = with_stt_server(settings, lambda: load_whisper(settings, paths.stt,
                                                         settings.stt_instances))
    llm = load_llm(settings, paths.llm)
    tts = with_cloud_voice(settings, PiperTts(paths.tts, threads=settings.tts_threads,
                                              executor=workers.tts))
    turn = load_turn_detector(settings, paths.turn)
    kb = open_knowledge_base(settings)
    agent = Agent(settings, llm, kb, workers)
    log.info("models loaded in %.1f s", time.monotonic() - started)
    return workers, agent, vad, stt, tts, turn


async def load_engines(settings: Settings) -> Engines:
    workers, agent, vad, stt, tts, turn = await asyncio.to_thread(load_blocking, settings)
    phrases = await synthesize_phrases(tts, fixed_phrases(settings, agent))
    return Engines(vad=vad, stt=stt, tts=tts, agent=agent, workers=workers, phrases=phrases,
                   turn=turn)
