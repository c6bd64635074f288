"""Speech-to-text from an OpenAI-compatible ``/v1/audio/transcriptions`` server, in front of the
in-process model.

The same rule as the model server and ElevenLabs: the shared server is the primary, the local
faster-whisper model stays loaded and answers at once when the server refuses, errs or is slower
than ``stt_timeout_ms`` (then the shared circuit breaker skips the server for a cool-down), so
the caller hears a slower answer, never none. Blocking, like every STT engine: run in a worker.
"""

from __future__ import annotations

import io
import logging
import threading
import wave
from collections.abc import Callable

import httpx
import msgspec
import numpy as np

from appliance.config import ConfigError, Settings
from appliance.engines.base import EngineInfo, Stt, Transcript
from appliance.engines.breaker import CircuitBreaker

log = logging.getLogger(__name__)


class SttUnavailable(Exception):
    """The server did not give a transcription; the message says why (never the key)."""


class _Reply(msgspec.Struct):
    text: str


def wav_bytes(audio16k: np.ndarray) -> bytes:
    """16 kHz mono int16 WAV: what every transcription server accepts."""
    pcm = (np.clip(np.asarray(audio16k, dtype=np.float32), -1.0, 1.0) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


class OpenAiStt:
    """One kept-alive HTTP client; ``transcribe`` raises SttUnavailable on any failure."""

    def __init__(self, base_url: str, model: str, *, language: str, api_key: str = "",
                 timeout_s: float = 2.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                    timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 0.5)))
        self._model, self._language = model, language
        self.info = EngineInfo(slot="stt", name=f"server:{model}", version="openai-compatible",
                               path=base_url, device="remote")

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        files = {"file": ("turn.wav", wav_bytes(audio16k), "audio/wav")}
        data = {"model": self._model, "language": self._language, "response_format": "json"}
        try:
            response = self._client.post("/audio/transcriptions", files=files, data=data)
            response.raise_for_status()
            text = msgspec.json.decode(response.content, type=_Reply).text.strip()
        except httpx.HTTPStatusError as err:
            raise SttUnavailable(f"HTTP {err.response.status_code}") from err
        except (httpx.HTTPError, msgspec.DecodeError) as err:
            raise SttUnavailable(f"{type(err).__name__}: {err}") from err
        return Transcript(text=text, language=self._language,
                          no_speech_prob=0.0 if text else 1.0)


class FailoverStt:
    """The server while it answers, the in-process model whenever it does not."""

    def __init__(self, server: OpenAiStt, local: Stt, breaker: CircuitBreaker) -> None:
        self.server, self.local, self.breaker = server, local, breaker
        self._lock = threading.Lock()  # the breaker is shared by the STT worker threads
        self.info = EngineInfo(slot="stt", name=f"{server.info.name} (local {local.info.name})",
                               version=server.info.version, path=server.info.path,
                               device=f"remote, {local.info.device} fallback")

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        with self._lock:
            allowed = self.breaker.allow()
        if allowed:
            try:
                transcript = self.server.transcribe(audio16k)
            except SttUnavailable as err:
                with self._lock:
                    opened = self.breaker.failure()
                log.warning("STT server failed (%s): transcribing in-process%s", err,
                            f"; skipping the server for {self.breaker.cooldown_s:.0f} s"
                            if opened else "")
            else:
                with self._lock:
                    if self.breaker.success():
                        log.warning("STT server answers again")
                return transcript
        return self.local.transcribe(audio16k)


def with_stt_server(settings: Settings, load_local: Callable[[], Stt]) -> Stt:
    """The STT the settings choose: in-process alone (default), or the server in front of it."""
    local = load_local()
    if settings.stt_backend == "in-process":
        return local
    if not settings.stt_url.startswith(("http://", "https://")):
        raise ConfigError("APPLIANCE_STT_URL must be the server's http(s) base URL, e.g. "
                          "http://gpu-host:8000/v1, when APPLIANCE_STT_BACKEND=openai")
    server = OpenAiStt(settings.stt_url, settings.stt_server_model,
                       language=settings.stt_language, api_key=settings.stt_api_key,
                       timeout_s=settings.stt_timeout_ms / 1000)
    log.info("transcribing with the server at %s, in-process %s behind it", settings.stt_url,
             local.info.name)
    return FailoverStt(server, local,
                       CircuitBreaker(settings.stt_failures_to_open, settings.stt_cooldown_s))
