"""X-Twilio-Signature checks over URLs rebuilt from the configured public base URL.

Behind a TLS-terminating proxy the local request URL is not the one Twilio signed, so the URL
is always rebuilt from settings, never taken from the request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from appliance.config import Settings, signing_token

log = logging.getLogger(__name__)


def public_url(settings: Settings, path: str, query: str = "") -> str:
    """The URL Twilio requested (and signed): public base URL, path and the query as sent."""
    url = settings.public_base_url.rstrip("/") + path
    return f"{url}?{query}" if query else url


def socket_url(settings: Settings, path: str, query: str = "") -> str:
    """The ws(s):// URL Twilio is told to open, and signs on upgrade with its query as sent:
    a query appended to a signed socket URL (``?tenant=other``) no longer matches its
    signature."""
    scheme, rest = public_url(settings, path, query).split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"


class SignatureChecker:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.validate_signatures
        self._validator = RequestValidator(signing_token(settings))
        if self.enabled and not settings.twilio_auth_token:
            log.warning("TWILIO_AUTH_TOKEN is not set: only the local simulated callers (signing "
                        "with the token in the data dir) get through; real Twilio calls are "
                        "refused until it is set")
        if not self.enabled:
            log.warning("signature validation is OFF (APPLIANCE_VALIDATE_SIGNATURES=false): "
                        "development only")

    def valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not self.enabled:
            return True
        if not signature or not self._validator.token:
            return False
        return bool(self._validator.validate(url, dict(params), signature))
