"""TwiML answers, always built with the twilio SDK's VoiceResponse (never by string)."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import VoiceResponse

from appliance.config import Settings

STREAM_PARAMETERS = ("CallSid", "From", "To")


def connect_stream(url: str, form: Mapping[str, str]) -> VoiceResponse:
    """<Connect><Stream> with the call's facts as <Parameter>s (query strings never arrive)."""
    response = VoiceResponse()
    connect = response.connect()
    stream = connect.stream(url=url)
    for name in STREAM_PARAMETERS:
        if form.get(name):
            stream.parameter(name=name[0].lower() + name[1:], value=form[name])
    return response


def busy(settings: Settings) -> VoiceResponse:
    """Polite refusal: dial the fallback number when one is set, else apologise and hang up."""
    response = VoiceResponse()
    if settings.fallback_number:
        response.dial(settings.fallback_number)
    else:
        response.say(settings.busy_message)
        response.hangup()
    return response
