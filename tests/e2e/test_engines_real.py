"""The real default engines on real audio: Piper makes the speech every other engine hears.

Each model loads once per module. Speech goes through the telephone path (Piper → μ-law 8 kHz
→ 20 ms frames → streaming upsampler → 16 kHz), as a caller's audio would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import numpy as np
import pytest

from appliance.config import Settings
from appliance.core.audio import Ulaw8kTo16k, frames, is_voiced, pcm16_to_ulaw8k, ulaw_decode
from appliance.core.listener import Listener
from appliance.core.turns import TurnEvent
from appliance.core.workers import RankedPool
from appliance.engines import faster_whisper_stt
from appliance.engines.base import ChatMessage, PromptUsage
from appliance.engines.faster_whisper_stt import FasterWhisperStt
from appliance.engines.llama_cpp_llm import LlamaCppLlm
from appliance.engines.piper_tts import PiperTts
from appliance.engines.silero_vad import SileroVad
from appliance.models.locate import default_path

pytestmark = pytest.mark.slow

QUESTION = "What time do you open tomorrow?"
SYSTEM = ChatMessage("system", "You are the receptionist of Harbor Dental. Answer briefly.")


@pytest.fixture(scope="module")
def tts() -> PiperTts:
    return PiperTts(default_path("tts"), threads=1)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(default_path("vad"))


@pytest.fixture(scope="module")
def stt() -> FasterWhisperStt:
    return FasterWhisperStt(default_path("stt"), device="cpu", threads=1, beam_size=1)


@pytest.fixture(scope="module")
def llm() -> LlamaCppLlm:
    return LlamaCppLlm(default_path("llm"), instances=2, threads=1, n_ctx=1024, device="cpu")


def phone_audio(ulaw: bytes) -> np.ndarray:
    """μ-law 8 kHz as the call session would hand it to the VAD and STT: 16 kHz float32."""
    up = Ulaw8kTo16k()
    return np.concatenate([up.process(f) for f in frames(ulaw)])


@pytest.fixture(scope="module")
def question_ulaw(tts: PiperTts) -> bytes:
    pcm, rate = tts.synthesize_pcm(QUESTION)
    return pcm16_to_ulaw8k(pcm, rate)


def test_piper_threads_sleep_between_steps() -> None:
    """The voice's second thread does not spin between steps, holding a core other calls need."""
    options = PiperTts(default_path("tts"), threads=2)._voice.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_piper_streams_one_ulaw_chunk_per_sentence(tts: PiperTts) -> None:
    async def collect() -> list[bytes]:
        return [c async for c in tts.synthesize("Thanks for calling. We open at nine tomorrow.")]

    chunks = asyncio.run(collect())
    assert len(chunks) == 2
    seconds = sum(len(c) for c in chunks) / 8000
    assert 1.5 < seconds < 6.0
    voiced = [is_voiced(f) for f in frames(b"".join(chunks))]
    assert sum(voiced) > 0.5 * len(voiced)


def test_piper_starts_a_reply_at_its_first_sound(tts: PiperTts) -> None:
    text = "Fillings start at one hundred and twenty dollars."

    async def first_chunk() -> bytes:
        return await anext(aiter(tts.synthesize(text)))

    def silent_ms(ulaw: bytes) -> int:
        """Leading 5 ms slices below -40 dB of the loudest sample."""
        pcm = np.abs(ulaw_decode(ulaw).astype(np.int32))
        return 5 * int(np.flatnonzero(pcm > pcm.max() * 0.01)[0] // 40)

    pcm, rate = tts.synthesize_pcm(text)
    untrimmed = silent_ms(pcm16_to_ulaw8k(pcm, rate))
    trimmed = silent_ms(asyncio.run(first_chunk()))
    assert trimmed + 10 <= untrimmed


def test_piper_synthesizes_in_the_workers_it_is_given() -> None:
    class Counting(RankedPool):
        submitted = 0

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.submitted += 1
            return super().submit(fn, *args, **kwargs)

    pool = Counting("tts", 1)
    voice = PiperTts(default_path("tts"), threads=1, executor=pool)

    async def collect() -> list[bytes]:
        return [c async for c in voice.synthesize("Thanks for calling. We open at nine.")]

    try:
        assert len(asyncio.run(collect())) == 2
    finally:
        pool.shutdown()
    assert pool.submitted == 3  # two sentences, then the step that finds no more


def test_piper_stops_working_when_the_consumer_stops(
    tts: PiperTts, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentences: list[int] = []
    real = tts._voice.phoneme_ids_to_audio
    def counted(*args: Any, **kwargs: Any) -> Any:
        sentences.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tts._voice, "phoneme_ids_to_audio", counted)

    async def first_only() -> bytes:
        stream = tts.synthesize("One sentence. Another sentence. And a third one.")
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    assert asyncio.run(first_only())
    assert len(sentences) == 1


def test_vad_scores_speech_high_and_silence_low(vad: SileroVad, question_ulaw: bytes) -> None:
    silence = bytes([0xFF]) * 8000
    audio = phone_audio(silence + question_ulaw + silence)
    stream = vad.stream()
    probs = [p for i in range(0, len(audio), 320) for p in stream.probabilities(audio[i : i + 320])]
    assert len(probs) == len(audio) // 512
    lead = probs[: 8000 * 2 // 512 - 2]  # the first second, minus the upsampler's lag
    speech = probs[len(lead) + 4 : len(lead) + 4 + len(question_ulaw) * 2 // 512 - 4]
    assert max(lead) < 0.2
    assert np.mean(speech) > 0.6 and np.mean(np.array(speech) > 0.5) > 0.7


def test_vad_streams_are_independent_and_chunking_free(
    vad: SileroVad, question_ulaw: bytes
) -> None:
    audio = phone_audio(question_ulaw)
    one, other = vad.stream(), vad.stream()
    whole = one.probabilities(audio)
    other.probabilities(np.zeros(1000, dtype=np.float32))  # must not disturb ``one``
    other.reset()
    pieces = [p for i in range(0, len(audio), 700) for p in other.probabilities(audio[i : i + 700])]
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_stt_transcribes_phone_quality_speech(stt: FasterWhisperStt, question_ulaw: bytes) -> None:
    transcript = stt.transcribe(phone_audio(question_ulaw))
    words = transcript.text.lower()
    assert "open" in words and "tomorrow" in words
    assert transcript.no_speech_prob < 0.5


class SeenWindows:
    """CTranslate2's Whisper, with the window length of every encode it is asked for noted."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.frames: list[int] = []

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        self.frames.append(features.shape[-1])
        return self._model.encode(features, to_cpu=to_cpu)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def test_stt_encodes_the_question_and_its_padding_not_30_s(question_ulaw: bytes) -> None:
    """The encoder reads ~2 s of question and 6 s of padding, not Whisper's 30 s window, and
    hears the same words as with the full window."""
    audio = phone_audio(question_ulaw)
    transcripts, windows = {}, {}
    for pad_s in (6.0, 30.0):
        stt = FasterWhisperStt(default_path("stt"), device="cpu", threads=1, pad_s=pad_s)
        seen = stt._model.model = SeenWindows(stt._model.model)
        transcripts[pad_s] = stt.transcribe(audio).text
        windows[pad_s] = seen.frames
    audio_frames = audio.size // 160
    assert windows[30.0] == [3000]
    assert len(windows[6.0]) == 1 and audio_frames + 600 <= windows[6.0][0] <= audio_frames + 700
    assert transcripts[6.0] == transcripts[30.0]
    assert "tomorrow" in transcripts[6.0].lower()


def test_stt_redoes_a_transcription_that_runs_on_with_the_full_window(
        question_ulaw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder that reaches the token limit (Whisper repeating itself when it did not hear
    the words end) has its transcription done again with the full 30 s window."""
    audio = phone_audio(question_ulaw)
    stt = FasterWhisperStt(default_path("stt"), device="cpu", threads=1)
    seen = stt._model.model = SeenWindows(stt._model.model)
    assert "tomorrow" in stt.transcribe(audio).text.lower() and stt.retried == 0
    monkeypatch.setattr(faster_whisper_stt, "token_limit", lambda audio_s: 2)
    transcript = stt.transcribe(audio)
    assert seen.frames[1] < 3000 and seen.frames[2:] == [3000]
    assert stt.retried == 1
    assert "tomorrow" in transcript.text.lower()  # the full window's words, not two tokens


def test_stt_replicas_transcribe_calls_side_by_side(question_ulaw: bytes) -> None:
    stt = FasterWhisperStt(default_path("stt"), device="cpu", threads=1, instances=2)
    assert stt._model.model.num_workers == 2  # CTranslate2 holds two replicas
    audio = phone_audio(question_ulaw)
    with ThreadPoolExecutor(2) as pool:  # as the STT pool hands two calls' questions on
        transcripts = list(pool.map(stt.transcribe, [audio, audio[::-1].copy()]))
    assert "tomorrow" in transcripts[0].text.lower()  # each call gets its own words back
    assert "tomorrow" not in transcripts[1].text.lower()


def drain(stream: Iterator[str]) -> str:
    return "".join(stream)


def test_llm_streams_tokens(llm: LlamaCppLlm) -> None:
    messages = [SYSTEM, ChatMessage("user", QUESTION)]
    tokens = list(llm.stream_chat(messages, max_tokens=16, temperature=0.0, session_id="t"))
    assert len(tokens) > 1 and "".join(tokens).strip()
    assert llm.pool.free == 2


def test_llm_early_close_releases_the_instance(llm: LlamaCppLlm) -> None:
    messages = [SYSTEM, ChatMessage("user", QUESTION)]
    stream = llm.stream_chat(messages, max_tokens=64, temperature=0.0)
    assert next(stream)
    assert llm.pool.free == 1
    stream.close()
    assert llm.pool.free == 2


def test_llm_blocks_when_all_instances_are_busy(llm: LlamaCppLlm) -> None:
    messages = [SYSTEM, ChatMessage("user", QUESTION)]
    held = [llm.stream_chat(messages, max_tokens=64, temperature=0.0) for _ in range(2)]
    for stream in held:
        next(stream)
    got_one = threading.Event()

    def third() -> None:
        drain(llm.stream_chat(messages, max_tokens=2, temperature=0.0))
        got_one.set()

    worker = threading.Thread(target=third)
    worker.start()
    assert not got_one.wait(0.3)
    held[0].close()
    assert got_one.wait(30)
    worker.join()
    held[1].close()
    assert llm.pool.free == 2


def test_llm_routes_a_session_back_to_its_instance(llm: LlamaCppLlm) -> None:
    messages = [SYSTEM, ChatMessage("user", QUESTION)]
    drain(llm.stream_chat(messages, max_tokens=4, temperature=0.0, session_id="alice"))
    drain(llm.stream_chat(messages, max_tokens=4, temperature=0.0, session_id="bob"))
    instance = llm.pool.acquire("alice")
    try:
        assert instance.session_id == "alice"
    finally:
        llm.pool.release(instance, "alice")


def first_token_seconds(llm: LlamaCppLlm, messages: list[ChatMessage], session_id: str) -> float:
    stream = llm.stream_chat(messages, max_tokens=8, temperature=0.0, session_id=session_id)
    started = time.perf_counter()
    with closing(stream):
        next(stream)
        return time.perf_counter() - started


def test_llm_second_turn_reuses_the_cached_prefix(llm: LlamaCppLlm) -> None:
    facts = " ".join(f"Fact {i}: the clinic has room {i} on floor {i % 3}." for i in range(20))
    system = ChatMessage("system", f"You answer for a clinic. {facts}")
    history = [system, ChatMessage("user", "Hi")]
    cold = first_token_seconds(llm, history, "carol")
    history += [ChatMessage("assistant", "Hello!"), ChatMessage("user", QUESTION)]
    warm = first_token_seconds(llm, history, "carol")
    assert warm < cold


def test_llm_reports_the_prompt_prefix_it_reused(llm: LlamaCppLlm) -> None:
    """The next turn's prompt starts with the last one's (persona, question, the answer as it
    was generated): only the new turn is read; the counts come from llama.cpp itself."""
    first_turn = [SYSTEM, ChatMessage("user", QUESTION)]
    first = PromptUsage()
    answer = "".join(llm.stream_chat(first_turn, max_tokens=16, temperature=0.0,
                                     session_id="dave", usage=first))
    assert first.tokens and first.evaluated and first.reused is not None
    assert first.reused + first.evaluated == first.tokens and first.threads == 1
    second = PromptUsage()
    drain(llm.stream_chat([*first_turn, ChatMessage("assistant", answer),
                           ChatMessage("user", "And on Sunday?")],
                          max_tokens=4, temperature=0.0, session_id="dave", usage=second))
    assert second.tokens and second.reused is not None and second.evaluated is not None
    assert second.reused + second.evaluated == second.tokens
    assert second.reused >= first.tokens  # all of the first prompt, persona included
    assert second.evaluated < second.tokens - first.tokens  # and the answer's tokens too
    assert second.eval_s is not None and second.eval_s > 0


def test_llm_reads_prompts_with_more_threads_only_when_alone() -> None:
    import llama_cpp

    llm = LlamaCppLlm(default_path("llm"), instances=2, threads=1, batch_threads=2, n_ctx=512)
    instances = list(llm.pool._free)
    messages = [ChatMessage("user", "Say hello.")]
    first = llm.stream_chat(messages, max_tokens=2, temperature=0.0, session_id="a")
    next(first)
    (alone,) = [i for i in instances if i not in llm.pool._free]
    second = llm.stream_chat(messages, max_tokens=2, temperature=0.0, session_id="b")
    next(second)
    (crowded,) = [i for i in instances if i is not alone]
    try:
        assert llama_cpp.llama_n_threads_batch(alone.llama.ctx) == 2
        assert llama_cpp.llama_n_threads_batch(crowded.llama.ctx) == 1
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("before", [None, "Do you take Delta Dental insurance?"])
def test_vad_hears_a_soft_onset_after_long_digital_silence(vad: SileroVad, tts: PiperTts,
                                                          before: str | None) -> None:
    """The bench's "Where is your office?" after 8 s of μ-law silence (a caller waiting out a
    long reply), at every phase of the 20 ms frame against the 32 ms window: the listener
    confirms the onset within its first 0.6 s. Without the VAD's noise floor it was missed
    outright at some phases (the call's turn was lost) and confirmed 0.9 s late at others."""
    def ulaw(text: str) -> list[bytes]:
        pcm, rate = tts.synthesize_pcm(text)
        return list(frames(pcm16_to_ulaw8k(pcm, rate)))

    question, earlier = ulaw("Where is your office?"), ulaw(before) if before else []
    silence = bytes([0xFF]) * 160

    async def onset(listener: Listener, lead: list[bytes]) -> int | None:
        """Frames into the question when the listener confirmed speech; None: never."""
        for i, frame in enumerate(lead + question + [silence] * 50):
            heard = [h.event for h in await listener.hear(frame)]
            if TurnEvent.SPEECH_START in heard and i >= len(lead):
                return i - len(lead)
        return None

    with ThreadPoolExecutor(1) as pool:
        starts = [asyncio.run(onset(Listener(Settings(turn_model=False), vad, pool),
                                    earlier + [silence] * (400 + phase)))
                  for phase in range(8)]
    assert all(s is not None and s <= 30 for s in starts), starts
