"""ElevenLabs streaming text-to-speech: μ-law 8 kHz straight from the API, no conversion.

The engine only talks to ElevenLabs and says precisely what went wrong, as a typed error;
deciding what to do about it (fall back, back off, give up) is ``failover_tts``'s job. One
``httpx.AsyncClient`` is shared by every call so the TLS connection stays warm between sentences:
a fresh handshake would cost more than the model's own latency.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from appliance.config import REDACTED, Settings
from appliance.core.speakable import speakable
from appliance.engines.base import EngineInfo

READ_TIMEOUT_S = 10.0  # a backstop only: the failover applies the tight first-byte deadline
KEEPALIVE_S = 60.0
WARM_TIMEOUT_S = 2.0  # a call's end waits for its warm-up: keep it short


class ElevenLabsError(Exception):
    """Why a request failed, phrased for a log line; never carries the API key."""


class AuthError(ElevenLabsError):
    """401/403: the key is wrong, revoked or lacks access. Retrying cannot help."""


class RateLimited(ElevenLabsError):
    """429: too many requests or concurrent streams; ``retry_after``: the server's wish, if any."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(ElevenLabsError):
    """5xx: ElevenLabs is having trouble."""


class RequestRejected(ElevenLabsError):
    """Another 4xx (422 bad body, 400 …): this request will not work as sent."""


class ElevenLabsTimeout(ElevenLabsError):
    """No connection or no audio in time."""


class NetworkError(ElevenLabsError):
    """Connection refused, reset, or DNS failure: the box may be offline."""


class StreamDropped(ElevenLabsError):
    """The stream broke after some audio arrived; ``received`` bytes were already yielded."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class ElevenLabsTts:
    """One ElevenLabs voice, streamed over HTTP; shared by every call."""

    def __init__(
        self,
        api_key: str,
        *,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        base_url: str = "https://api.elevenlabs.io",
        latency: int = 3,
        connect_timeout_s: float = 1.0,
        voice_settings: dict[str, Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api_key = api_key
        self._models_url = f"{base_url.rstrip('/')}/v1/models"
        self._url = f"{base_url.rstrip('/')}/v1/text-to-speech/{voice_id}/stream"
        self._params = {"output_format": "ulaw_8000", "optimize_streaming_latency": str(latency)}
        self._model_id = model_id
        self._voice_settings = voice_settings
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=connect_timeout_s),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=KEEPALIVE_S),
        )
        self.info = EngineInfo(slot="tts", name="elevenlabs", version=model_id, path=self._url,
                               device="cloud")

    @classmethod
    def from_settings(cls, settings: Settings) -> ElevenLabsTts:
        return cls(
            settings.elevenlabs_api_key,
            voice_id=settings.elevenlabs_voice_id,
            model_id=settings.elevenlabs_model,
            base_url=settings.elevenlabs_base_url,
            latency=settings.elevenlabs_latency,
            connect_timeout_s=max(1.0, settings.elevenlabs_first_byte_ms / 1000),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def warm(self) -> None:
        """Open (or refresh) the pooled connection with a free request, so the next sentence
        skips TCP and TLS set-up: a cold connection alone can eat the first-byte deadline."""
        try:
            response = await self._client.get(self._models_url, timeout=WARM_TIMEOUT_S,
                                              headers={"xi-api-key": self._api_key})
            await response.aclose()
        except httpx.HTTPError:
            pass  # best effort: the sentence itself will report what is wrong

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Raw μ-law 8 kHz chunks as ElevenLabs streams them; raises an ``ElevenLabsError``."""
        body: dict[str, Any] = {"text": speakable(text), "model_id": self._model_id}
        if self._voice_settings:
            body["voice_settings"] = self._voice_settings
        headers = {"xi-api-key": self._api_key}
        received = 0
        try:
            async with self._client.stream("POST", self._url, params=self._params, json=body,
                                           headers=headers) as response:
                if response.status_code != 200:
                    raise self._status_error(response.status_code, response.headers,
                                             await response.aread())
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    yield chunk
        except httpx.TimeoutException as err:
            if received:
                raise StreamDropped(f"stream stalled after {received} bytes", received) from None
            raise ElevenLabsTimeout(f"timed out ({type(err).__name__})") from None
        except httpx.TransportError as err:
            reason = self._scrub(str(err) or type(err).__name__)
            if received:
                raise StreamDropped(f"stream dropped after {received} bytes: {reason}",
                                    received) from None
            raise NetworkError(f"network error: {reason}") from None

    def _status_error(self, status: int, headers: httpx.Headers, body: bytes) -> ElevenLabsError:
        detail = self._detail(body)
        message = f"HTTP {status}{f' ({detail})' if detail else ''}"
        if status in (401, 403):
            return AuthError(message)
        if status == 429:
            return RateLimited(message, retry_after_s(headers.get("retry-after")))
        if status >= 500:
            return ServerError(message)
        return RequestRejected(message)

    def _detail(self, body: bytes) -> str:
        """The short status word ElevenLabs puts in an error body (``invalid_api_key`` …)."""
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            return ""
        if isinstance(detail, dict):
            detail = detail.get("status") or detail.get("message") or ""
        return self._scrub(str(detail or "")[:120])

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, REDACTED) if self._api_key else text
