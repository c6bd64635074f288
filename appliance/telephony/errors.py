"""What both Twilio wire protocols raise for a frame they refuse."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A frame or message we refuse; the message is the logged reason."""
