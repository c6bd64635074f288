"""One JSON object per log line, tagged with the call it belongs to (``APPLIANCE_LOG_FORMAT=json``).

A log shipper (journald → Loki, Vector, a Kubernetes collector) then filters one call's lines by
``call_sid`` instead of grepping message text. The call's sid is a context variable, set where a
call's socket starts; every task the session creates afterwards, and every worker thread it
hands a model call to (``core.workers`` copies the context), inherits it, so a line logged deep
inside an engine still carries it. Standard library only: the record is five fields.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

CALL_SID: ContextVar[str] = ContextVar("call_sid", default="")


class JsonFormatter(logging.Formatter):
    """``time`` (UTC, ms), ``level``, ``logger``, ``message``; ``call_sid`` inside a call;
    ``exc`` with the traceback when there is one. The handler's filters (secret scrubbing) have
    already rewritten the message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if call_sid := CALL_SID.get():
            entry["call_sid"] = call_sid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
