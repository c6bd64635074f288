"""One typed, frozen settings object, loaded once at start-up and passed explicitly.

Sources, later wins: defaults < TOML file (``APPLIANCE_CONFIG`` or ``--config``) < environment
(``APPLIANCE_<FIELD>`` plus the vendor-standard ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
``ELEVENLABS_API_KEY``). An invalid value fails start-up with a message naming the setting.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from appliance.logs import JsonFormatter
from appliance.private_files import private_dir

ENV_PREFIX = "APPLIANCE_"
VENDOR_ENV = {
    "TWILIO_ACCOUNT_SID": "twilio_account_sid",
    "TWILIO_AUTH_TOKEN": "twilio_auth_token",
    "ELEVENLABS_API_KEY": "elevenlabs_api_key",
}
SECRET_FIELDS = frozenset({"twilio_auth_token", "elevenlabs_api_key", "api_token",
                           "message_webhook_secret", "smtp_password", "llm_api_key", "stt_api_key",
                           "database_url", "redis_url"})
REDACTED = "********"

log = logging.getLogger(__name__)

# Kubernetes "service links": a Service named ``appliance`` puts APPLIANCE_SERVICE_HOST,
# APPLIANCE_SERVICE_PORT[_NAME], APPLIANCE_PORT=tcp://ip:port and APPLIANCE_PORT_<n>_TCP[_…]
# into every pod of the namespace. They are not settings and must not stop start-up.
SERVICE_LINK = re.compile(
    r"APPLIANCE_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)\w*)")
SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://", re.IGNORECASE)
# A name this close to a setting is a typo and refused; anything else is some other program's
# variable (a wrapper script's APPLIANCE_HOME) and only warned about.
TYPO_CUTOFF = 0.8

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
    log_format: Literal["text", "json"] = "text"  # json: one object per line, with call_sid
    # Bearer token for /api/* (call records, metrics); empty: a random one in the data dir.
    api_token: str = ""
    # Addresses/networks of reverse proxies whose X-Forwarded-For/-Proto are believed
    # (comma-separated, e.g. "127.0.0.1" for a proxy on this host); empty: none.
    trusted_proxies: str = ""

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
    stt_instances: int = 2  # Whisper replicas: calls transcribed at once (core/workers.py)
    stt_beam_size: int = 1
    # Padding Whisper's encoder reads after the utterance, instead of its whole 30 s window
    # (engines/faster_whisper_stt.py): 30000 gives the full window on every utterance.
    stt_pad_ms: int = 6000
    llm_threads: int = 1
    llm_batch_threads: int = 2  # prompt reading, when no other LLM stream is running
    llm_instances: int = 2
    llm_context: int = 2048
    llm_max_tokens: int = 48  # replies stop after two sentences anyway
    llm_temperature: float = 0.0  # greedy: a small model drifts off the facts when sampled
    llm_gpu_layers: int = -1
    # Who picks hang-up, transfer and take-a-message: "auto" the model when its preset declares
    # a function-calling chat format (gpu-small, gpu-large), else the rules; "on" the model
    # (a model server, or an llm_model path, whose format you know); "off" always the rules.
    llm_tools: Literal["auto", "on", "off"] = "auto"
    # Piper's threads for one sentence (helper threads sleep, not spin, between steps:
    # engines/onnx.py). Two: the first audio 0.20 -> 0.13 s p50 for one call, 0.21 -> 0.14 s with
    # four, whose voice-to-voice p95 held (1.24 s both; `appliance bench --calls 1,4
    # --duration 120`, 2-core Xeon).
    tts_threads: int = 2

    # Turn taking.
    vad_threshold: float = 0.5
    endpoint_silence_ms: int = 400
    speculative_stt_ms: int = 200
    min_speech_ms: int = 200
    # Silero confirms a soft onset ("Where is...") 0.16-0.9 s late after a long reply, depending
    # on window phase (measured); with 300 ms the second question lost its first words in about
    # one simulated call in three ("office."), with 1 s in none of 8.
    preroll_ms: int = 1000
    max_utterance_s: float = 20.0
    barge_in_ms: int = 200
    # Smart Turn v3 judges each pause: a finished question ends the turn after turn_complete_ms
    # of silence, an unfinished sentence waits up to turn_incomplete_ms. Measured (end-of-turn
    # delay, cut-offs) by `python -m appliance.bench.turn_taking`; see the README.
    turn_model: bool = True
    turn_complete_ms: int = 200
    turn_incomplete_ms: int = 1000
    turn_threshold: float = 0.5

    # Knowledge base.
    kb_collection: str = "business"
    kb_top_k: int = 3
    kb_max_distance: float = 0.65  # in scope on meaning alone (see kb/relevance.py)
    kb_min_coverage: float = 0.5  # ...or when this share of its words is in the documents
    kb_lexical_max_distance: float = 0.9  # and the meaning is no further than this
    answer_style: Literal["extractive", "generative"] = "extractive"
    kb_context_chars: int = 400  # budget for the fact lines put in each prompt
    kb_max_file_mb: float = 20.0  # larger documents are skipped at ingest, with a reason

    # Messages callers leave: optionally POSTed as signed JSON.
    message_webhook_url: str = ""
    message_webhook_secret: str = ""  # HMAC-SHA256 key for the X-Appliance-Signature header
    message_webhook_attempts: int = 4  # tries, 0.5 s, 1 s, 2 s apart
    message_email_to: str = ""  # also e-mail each message there, over SMTP
    message_email_from: str = "appliance@localhost"
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True  # off only for a relay on the same machine

    # ElevenLabs (optional cloud voice).
    elevenlabs_api_key: str = ""
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    elevenlabs_latency: int = 3
    elevenlabs_first_byte_ms: int = 400
    elevenlabs_failures_to_open: int = 3
    elevenlabs_cooldown_s: float = 30.0

    # Scale-out (README "Scale-out"); every one empty/default keeps the single box as it is.
    llm_backend: Literal["in-process", "openai"] = "in-process"
    llm_url: str = ""  # OpenAI-compatible base URL, e.g. http://gpu-host:8000/v1
    llm_server_model: str = ""  # the model name the server expects
    llm_api_key: str = ""
    llm_connect_timeout_ms: int = 300
    llm_first_token_ms: int = 1500  # also the longest pause between two tokens
    llm_failures_to_open: int = 2
    llm_cooldown_s: float = 15.0
    stt_backend: Literal["in-process", "openai"] = "in-process"
    stt_url: str = ""  # OpenAI-compatible base URL with /v1/audio/transcriptions under it
    stt_server_model: str = "whisper-1"  # the model name the server expects
    stt_api_key: str = ""
    stt_timeout_ms: int = 2000  # a transcription not back by then is done in-process
    stt_failures_to_open: int = 2
    stt_cooldown_s: float = 15.0
    database_url: str = ""  # postgresql://user@host/db: the call log on PostgreSQL
    kb_url: str = ""  # http://host:8000: the knowledge base on a Chroma server
    redis_url: str = ""  # redis://host:6379/0: call admission across boxes
    cluster_name: str = "appliance"  # Redis key prefix: several clusters may share one Redis
    box_id: str = ""  # this box's name in the cluster; default: its public host:port
    webhook_base_url: str = ""  # the shared URL Twilio's number calls, if not public_base_url
    cluster_heartbeat_s: float = 1.0
    cluster_box_ttl_s: float = 3.0  # a box silent this long is out of the pool

    # ConversationRelay.
    relay_voice: str = ""
    relay_tts_provider: str = ""
    relay_transcription_provider: str = ""
    language: str = "en-US"  # BCP 47: Whisper hears its first part, ConversationRelay all of it
    relay_interruptible: str = "any"
    relay_dtmf_detection: bool = True

    # Operator console (README "Console").
    console_session_hours: float = 12.0
    metrics_open: bool = False  # /metrics without an API token (a scraper on a private network)
    retention_days: float = 0.0  # purge calls (and recordings) older than this, daily (0: keep)
    viewer_recordings: bool = False  # may the viewer role play and download call recordings

    # Recordings and redaction (README "Recordings and redaction").
    recordings: bool = False  # one stereo FLAC per Media Streams call, in data_dir/recordings
    recording_notice: str = "This call may be recorded."  # said after the greeting when on
    redact_transcripts: bool = False  # card numbers, e-mails, phone numbers out of transcripts
    phone_region: str = "US"  # how national phone numbers are read, for redaction

    def __post_init__(self) -> None:
        checks = {
            "port": 0 < self.port < 65536,
            "max_calls": self.max_calls >= 1,
            "llm_instances": self.llm_instances >= 1,
            "stt_instances": self.stt_instances >= 1,
            "llm_threads": self.llm_threads >= 1,
            "stt_threads": self.stt_threads >= 1,
            "stt_pad_ms": 0 <= self.stt_pad_ms <= 30000,
            "vad_threshold": 0.0 < self.vad_threshold < 1.0,
            "endpoint_silence_ms": 100 <= self.endpoint_silence_ms <= 5000,
            "public_base_url": self.public_base_url.startswith(("http://", "https://")),
            "log_level": self.log_level.upper() in logging.getLevelNamesMapping(),
            "relay_interruptible": self.relay_interruptible in {"none", "dtmf", "speech", "any"},
            "speculative_stt_ms": 0 <= self.speculative_stt_ms < self.endpoint_silence_ms,
            "api_token": not self.api_token or len(self.api_token) >= MIN_API_TOKEN_CHARS,
            "trusted_proxies": all(_is_network(p) for p in self.proxy_list),
            "kb_max_file_mb": self.kb_max_file_mb > 0,
            "turn_complete_ms": 0 < self.turn_complete_ms <= self.turn_incomplete_ms,
            "turn_incomplete_ms": self.turn_incomplete_ms <= 5000,
            "turn_threshold": 0.0 < self.turn_threshold < 1.0,
            "socket_ticket_s": self.socket_ticket_s > 0,
            "start_timeout_s": self.start_timeout_s > 0,
            "media_timeout_s": self.media_timeout_s > 0,
            "max_call_s": self.max_call_s > 0,
            "audio_burst_s": self.audio_burst_s >= 1.0,
            "audio_flood_close_s": self.audio_flood_close_s > 0,
            "history_turns": self.history_turns >= 1,
            "phone_region": len(self.phone_region) == 2 and self.phone_region.isalpha(),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            value = REDACTED if bad[0] in SECRET_FIELDS else repr(getattr(self, bad[0]))
            raise ConfigError(f"invalid value for {env_name(bad[0])}: {value}")

    @property
    def proxy_list(self) -> list[str]:
        """``trusted_proxies`` as a list (uvicorn's ``forwarded_allow_ips``)."""
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def db_path(self) -> Path:
        return self.data_path / "calls.db"

    @property
    def greeting_text(self) -> str:
        """The Media Streams greeting; with the recording notice when calls are recorded."""
        greeting = self.relay_greeting_text
        if self.recordings and self.recording_notice:
            return f"{greeting} {self.recording_notice}"
        return greeting

    @property
    def relay_greeting_text(self) -> str:
        """ConversationRelay's greeting: its calls are never recorded here (no audio reaches
        us), so it never says they are."""
        return self.greeting.format(business=self.business_name)

    @property
    def recordings_path(self) -> Path:
        return self.data_path / "recordings"

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
LOCAL_API_TOKEN_FILE = "local-api-token"
MIN_API_TOKEN_CHARS = 16


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def signing_token(settings: Settings) -> str:
    """The token Twilio signatures are checked (or, by the simulated callers, made) with.

    Without ``TWILIO_AUTH_TOKEN`` a random local token is kept in the data dir: the demo caller
    on the same box signs with it, so signatures are still checked end to end, while real Twilio
    requests (signed with the real token) are refused until the real token is configured.
    """
    return settings.twilio_auth_token or _local_token(settings.data_path / LOCAL_TOKEN_FILE)


def api_token(settings: Settings) -> str:
    """The bearer token ``/api/*`` (call records, metrics) needs: ``APPLIANCE_API_TOKEN``, or
    without it a random token in the data dir that only the service user can read, so the
    simulated callers and the bench on this box get in and nothing gets in by address."""
    return settings.api_token or _local_token(settings.data_path / LOCAL_API_TOKEN_FILE)


def api_headers(settings: Settings) -> dict[str, str]:
    """The ``Authorization`` header a local tool sends to ``/api/*``."""
    return {"Authorization": f"Bearer {api_token(settings)}"}


def _local_token(path: Path) -> str:
    """The token kept at ``path`` (0600), made on first use. Two processes starting together
    (the bench and the server it spawned) agree: the first file linked into place wins."""
    try:
        if token := path.read_text().strip():
            return token
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    token = secrets.token_hex(16)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    try:
        os.link(draft, path)
    except FileExistsError:
        token = path.read_text().strip()
    finally:
        draft.unlink()
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
            name = _env_setting(key, value, fields)
            if name:
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


def _env_setting(key: str, value: str, fields: set[str]) -> str | None:
    """The setting an ``APPLIANCE_*`` variable names; None for a variable to ignore (warned);
    ConfigError for a misspelt setting or a port that is not a number."""
    name = key[len(ENV_PREFIX):].lower()
    if SERVICE_LINK.fullmatch(key) or (name == "port" and SERVICE_LINK_URL.match(value)):
        log.warning("ignoring %s: it is a Kubernetes service link (a Service named 'appliance'), "
                    "not a setting; set enableServiceLinks: false in the pod spec to drop it", key)
        return None
    if name == "port" and not value.strip().isdigit():
        raise ConfigError(f"{key} must be a port number (1-65535), got {value[:40]!r}")
    if name in fields:
        return name
    close = difflib.get_close_matches(name, fields, n=1, cutoff=TYPO_CUTOFF)
    if close:
        raise ConfigError(f"unknown setting {key}: did you mean {env_name(close[0])}?")
    log.warning("ignoring %s: not an appliance setting (`appliance config show` lists them)", key)
    return None


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class OneLineFilter(logging.Filter):
    """Escapes control characters in every log message, so nothing a caller sends (a callSid,
    a prompt) can end a log line early and forge the next one. Tracebacks are left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and _CONTROL.search(record.msg):
            # A deliberately multi-line message (a server log's tail): escape what went in.
            if isinstance(record.args, tuple):
                record.args = tuple(_escape(a) if isinstance(a, str) else a for a in record.args)
            return True
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = _escape(message), None
        return True


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


def setup_logging(settings: Settings) -> None:
    """Configure root logging once, with secrets scrubbed and control characters escaped on
    every handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(settings.secrets()))
    handler.addFilter(OneLineFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
