"""One typed, frozen settings object, loaded once at start-up and passed explicitly.

Sources, later wins: defaults < TOML file (``APPLIANCE_CONFIG`` or ``--config``) < environment
(``APPLIANCE_<FIELD>`` plus the vendor-standard ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
``ELEVENLABS_API_KEY``). An invalid value fails start-up with a message naming the setting.
"""

from __future__ import annotations

import logging
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

ENV_PREFIX = "APPLIANCE_"
VENDOR_ENV = {
    "TWILIO_ACCOUNT_SID": "twilio_account_sid",
    "TWILIO_AUTH_TOKEN": "twilio_auth_token",
    "ELEVENLABS_API_KEY": "elevenlabs_api_key",
}
SECRET_FIELDS = frozenset({"twilio_auth_token", "elevenlabs_api_key"})
REDACTED = "********"

# Short on purpose: the default 135M model echoes long instructions ("I'm a friendly
# receptionist...") instead of answering. Each turn's facts and question follow in the user
# message. Measured wording: tests/e2e/test_grounded_answers.py.
DEFAULT_PERSONA = (
    "You work at the front desk of {business}. Reply to the caller in one short sentence "
    "using only the facts."
)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every knob of the appliance. Field names map to ``APPLIANCE_<NAME>`` variables."""

    # Where things live.
    data_dir: str = "data"
    models_dir: str = "models"
    kb_dir: str = "kb"

    # Web.
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str = "http://127.0.0.1:8080"
    mode: Literal["media-streams", "conversation-relay"] = "media-streams"
    max_calls: int = 4
    validate_signatures: bool = True
    # Socket admission and per-call budgets (README "Call behaviour").
    socket_ticket_s: float = 30.0  # a webhook's one-use socket ticket expires after this
    start_timeout_s: float = 5.0  # a socket that sends no start/setup by then is closed
    media_timeout_s: float = 15.0  # a Media Streams call with no audio this long is ended
    max_call_s: float = 1800.0  # the longest a call may last
    audio_burst_s: float = 2.0  # audio a socket may send ahead of real time
    audio_flood_close_s: float = 10.0  # audio dropped over budget before the socket is closed
    history_turns: int = 20  # exchanges the agent keeps in a call's conversation
    log_level: str = "INFO"

    # Twilio.
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    transfer_number: str = ""
    fallback_number: str = ""

    # Business persona.
    business_name: str = "Harbor Dental"
    persona: str = DEFAULT_PERSONA
    greeting: str = "Thanks for calling {business}. How can I help you today?"
    apology: str = "Sorry, I had trouble with that. Could you say it again?"
    goodbye: str = "Thanks for calling. Goodbye!"
    transfer_phrase: str = "Sure, let me transfer you to a colleague now."
    hold_phrase: str = "One moment, please."
    hold_after_ms: int = 2500
    busy_message: str = "All our lines are busy right now. Please call again in a few minutes."

    # Models: a preset name from models/manifest.toml, or explicit paths per slot.
    models: str = "default"
    stt_model: str = ""
    llm_model: str = ""
    tts_voice: str = ""
    embed_model: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # Engine tuning.
    stt_threads: int = 1
    stt_beam_size: int = 1
    llm_threads: int = 1
    llm_batch_threads: int = 2  # prompt reading, when no other LLM stream is running
    llm_instances: int = 2
    llm_context: int = 2048
    llm_max_tokens: int = 48  # replies stop after two sentences anyway
    llm_temperature: float = 0.0  # greedy: a small model drifts off the facts when sampled
    llm_gpu_layers: int = -1
    tts_threads: int = 1

    # Turn taking.
    vad_threshold: float = 0.5
    endpoint_silence_ms: int = 400
    speculative_stt_ms: int = 200
    min_speech_ms: int = 200
    preroll_ms: int = 300
    max_utterance_s: float = 20.0
    barge_in_ms: int = 200

    # Knowledge base.
    kb_collection: str = "business"
    kb_top_k: int = 3
    kb_max_distance: float = 0.75
    kb_context_chars: int = 400  # budget for the fact lines put in each prompt

    # ElevenLabs (optional cloud voice).
    elevenlabs_api_key: str = ""
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    elevenlabs_latency: int = 3
    elevenlabs_first_byte_ms: int = 400
    elevenlabs_failures_to_open: int = 3
    elevenlabs_cooldown_s: float = 30.0

    # ConversationRelay.
    relay_voice: str = ""
    relay_tts_provider: str = ""
    relay_transcription_provider: str = ""
    language: str = "en-US"  # BCP 47: Whisper hears its first part, ConversationRelay all of it
    relay_interruptible: str = "any"
    relay_dtmf_detection: bool = True

    def __post_init__(self) -> None:
        checks = {
            "port": 0 < self.port < 65536,
            "max_calls": self.max_calls >= 1,
            "llm_instances": self.llm_instances >= 1,
            "llm_threads": self.llm_threads >= 1,
            "stt_threads": self.stt_threads >= 1,
            "vad_threshold": 0.0 < self.vad_threshold < 1.0,
            "endpoint_silence_ms": 100 <= self.endpoint_silence_ms <= 5000,
            "public_base_url": self.public_base_url.startswith(("http://", "https://")),
            "log_level": self.log_level.upper() in logging.getLevelNamesMapping(),
            "relay_interruptible": self.relay_interruptible in {"none", "dtmf", "speech", "any"},
            "speculative_stt_ms": 0 <= self.speculative_stt_ms < self.endpoint_silence_ms,
            "socket_ticket_s": self.socket_ticket_s > 0,
            "start_timeout_s": self.start_timeout_s > 0,
            "media_timeout_s": self.media_timeout_s > 0,
            "max_call_s": self.max_call_s > 0,
            "audio_burst_s": self.audio_burst_s >= 1.0,
            "audio_flood_close_s": self.audio_flood_close_s > 0,
            "history_turns": self.history_turns >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {env_name(bad[0])}: {getattr(self, bad[0])!r}")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def db_path(self) -> Path:
        return self.data_path / "calls.db"

    @property
    def greeting_text(self) -> str:
        return self.greeting.format(business=self.business_name)

    @property
    def stt_language(self) -> str:
        """Whisper's language code: the primary subtag of ``language`` ("en-US" → "en")."""
        return self.language.split("-")[0].lower()

    @property
    def system_prompt(self) -> str:
        return self.persona.format(business=self.business_name)

    def secrets(self) -> list[str]:
        """Secret values currently set, for log scrubbing."""
        return [v for f in SECRET_FIELDS if (v := getattr(self, f))]

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict with secrets masked: safe to print."""
        out = msgspec.structs.asdict(self)
        for name in SECRET_FIELDS:
            if out[name]:
                out[name] = REDACTED
        return out


LOCAL_TOKEN_FILE = "local-twilio-auth-token"


def signing_token(settings: Settings) -> str:
    """The token Twilio signatures are checked (or, by the simulated callers, made) with.

    Without ``TWILIO_AUTH_TOKEN`` a random local token is kept in the data dir: the demo caller
    on the same box signs with it, so signatures are still checked end to end, while real Twilio
    requests (signed with the real token) are refused until the real token is configured.
    """
    if settings.twilio_auth_token:
        return settings.twilio_auth_token
    path = settings.data_path / LOCAL_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        return token


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    for env, name in VENDOR_ENV.items():
        if name == field:
            return env
    return ENV_PREFIX + field.upper()


def _field_names() -> set[str]:
    return set(Settings.__struct_fields__)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, an optional TOML file, the environment and overrides."""
    environ = dict(os.environ if environ is None else environ)
    fields = _field_names()
    raw: dict[str, Any] = {}

    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from err
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} in {path}")
        raw.update(doc)

    for key, value in environ.items():
        if key in VENDOR_ENV:
            raw[VENDOR_ENV[key]] = value
        elif key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX):].lower()
            if name not in fields:
                raise ConfigError(f"unknown setting {key}")
            raw[name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})

    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as err:
        message = str(err)
        if message.startswith("invalid value for"):
            raise ConfigError(message.split(" - at ")[0]) from err
        field = message.rsplit("$.", 1)[-1].strip("`") if "$." in message else ""
        where = env_name(field) if field in fields else "settings"
        raise ConfigError(f"invalid value for {where}: {message}") from err


class SecretFilter(logging.Filter):
    """Scrubs secret values from every log record, whatever logger emitted it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            for secret in self._secrets:
                message = message.replace(secret, REDACTED)
            record.msg, record.args = message, None
        return True


def setup_logging(settings: Settings) -> None:
    """Configure root logging once, with secrets scrubbed on every handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(settings.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
