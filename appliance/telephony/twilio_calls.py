"""Twilio REST actions on a live call (hang up, transfer), kept out of the protocol code.

The twilio client is blocking (requests), so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging

from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

log = logging.getLogger(__name__)


class TwilioCalls:
    def __init__(self, account_sid: str, auth_token: str) -> None:
        self._client = Client(account_sid, auth_token) if account_sid and auth_token else None

    @property
    def available(self) -> bool:
        return self._client is not None

    async def hang_up(self, call_sid: str) -> None:
        if self._client is None:
            raise RuntimeError("no Twilio credentials: cannot hang up over REST")
        client = self._client
        await asyncio.to_thread(lambda: client.calls(call_sid).update(status="completed"))
        log.info("call %s: hung up over REST", call_sid)

    async def transfer(self, call_sid: str, number: str) -> None:
        """Replace the live call's TwiML with a <Dial> to ``number``."""
        if self._client is None:
            raise RuntimeError("no Twilio credentials: cannot transfer over REST")
        client = self._client
        twiml = str(dial_twiml(number))
        await asyncio.to_thread(lambda: client.calls(call_sid).update(twiml=twiml))
        log.info("call %s: transferred", call_sid)


def dial_twiml(number: str) -> VoiceResponse:
    response = VoiceResponse()
    response.dial(number)
    return response
