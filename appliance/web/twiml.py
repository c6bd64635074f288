"""TwiML answers, always built with the twilio SDK's VoiceResponse (never by string)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from appliance.config import Settings
from appliance.web.runtime import TICKET_PARAMETER

STREAM_PARAMETERS = ("CallSid", "From", "To")


def connect_stream(url: str, form: Mapping[str, str], ticket: str) -> VoiceResponse:
    """<Connect><Stream> with the call's facts and its socket ticket as <Parameter>s (query
    strings never arrive); Twilio hands them back in the start message's customParameters."""
    response = VoiceResponse()
    connect = response.connect()
    _parameters(connect.stream(url=url), form, ticket)
    return response


def _parameters(element: Any, form: Mapping[str, str], ticket: str) -> None:
    for name in STREAM_PARAMETERS:
        if form.get(name):
            element.parameter(name=name[0].lower() + name[1:], value=form[name])
    element.parameter(name=TICKET_PARAMETER, value=ticket)


def busy(settings: Settings) -> VoiceResponse:
    """Polite refusal: dial the fallback number when one is set, else apologise and hang up."""
    response = VoiceResponse()
    if settings.fallback_number:
        response.dial(settings.fallback_number)
    else:
        response.say(settings.busy_message)
        response.hangup()
    return response


def connect_relay(settings: Settings, url: str, action: str,
                  form: Mapping[str, str], ticket: str) -> VoiceResponse:
    """<Connect action><ConversationRelay>: Twilio speaks and listens, we answer in text.

    ``action`` is where Twilio goes when the session ends (our hand-off route).
    """
    response = VoiceResponse()
    connect = response.connect(action=action)
    relay = connect.conversation_relay(
        url=url,
        welcome_greeting=settings.relay_greeting_text,
        voice=settings.relay_voice or None,
        tts_provider=settings.relay_tts_provider or None,
        transcription_provider=settings.relay_transcription_provider or None,
        language=settings.language or None,
        interruptible=settings.relay_interruptible or None,
        dtmf_detection=settings.relay_dtmf_detection,
    )
    _parameters(relay, form, ticket)
    return response


def after_relay(settings: Settings, transfer: bool) -> VoiceResponse:
    """What the call does once the relay session ended: dial the human, or hang up."""
    response = VoiceResponse()
    if transfer and settings.transfer_number:
        response.dial(settings.transfer_number)
    else:
        response.hangup()
    return response
