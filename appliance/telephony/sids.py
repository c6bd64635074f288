"""Twilio SID formats: two letters and 32 lower-case hex digits (``CA…`` a call, ``MZ…`` a
media stream).

Checked where a SID first arrives, so a caller-supplied value with control characters or a
megabyte of text never reaches the call log, the log lines or the REST API.
"""

from __future__ import annotations

import re

_HEX32 = r"[0-9a-f]{32}"  # as Twilio writes them; nothing else is one
CALL_SID = re.compile("CA" + _HEX32)
STREAM_SID = re.compile("MZ" + _HEX32)


def is_call_sid(text: str) -> bool:
    return CALL_SID.fullmatch(text) is not None


def is_stream_sid(text: str) -> bool:
    return STREAM_SID.fullmatch(text) is not None
