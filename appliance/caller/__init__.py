"""A simulated Twilio caller: drives a running appliance over the real wire protocols."""

from appliance.caller.audio_source import AudioSourceError, Utterance, from_texts, from_wav
from appliance.caller.report import CallFailed, CallOptions, CallReport, TurnReport
from appliance.caller.twilio_sim import run_call

__all__ = [
    "AudioSourceError",
    "CallFailed",
    "CallOptions",
    "CallReport",
    "TurnReport",
    "Utterance",
    "from_texts",
    "from_wav",
    "run_call",
]
