"""What happens in a turn, as timed stage events with error codes.

Modelled on Home Assistant's assist_pipeline: each stage announces its start and end with a
monotonic timestamp, and a failure carries a stable code next to its message. The sessions emit
them through their :class:`~appliance.core.recorder.CallRecorder`; the turn metrics are the
differences between them, and anything else that wants to watch calls live (a console, a
metrics exporter, the session tests' ordering checks) subscribes to the same stream.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class StageEventType(enum.StrEnum):
    TURN_START = "turn-start"  # the caller's turn is over: a reply is being made
    STT_START = "stt-start"
    STT_END = "stt-end"
    RETRIEVAL_END = "retrieval-end"  # the agent decided what to say (knowledge base searched)
    LLM_START = "llm-start"
    LLM_FIRST_TOKEN = "llm-first-token"
    SENTENCE_READY = "sentence-ready"
    TTS_FIRST_AUDIO = "tts-first-audio"
    TURN_END = "turn-end"
    ERROR = "error"


class ErrorCode(enum.StrEnum):
    STT_FAILED = "stt-failed"
    RETRIEVAL_FAILED = "retrieval-failed"
    LLM_FAILED = "llm-failed"
    TTS_FAILED = "tts-failed"
    EMPTY_REPLY = "empty-reply"
    TOOL_FAILED = "tool-failed"
    TWILIO_ERROR = "twilio-error"
    INTERNAL = "internal-error"  # a fault outside any stage: a bug


@dataclass(frozen=True, slots=True)
class StageEvent:
    type: StageEventType
    at: float  # the session clock's monotonic seconds
    data: Mapping[str, Any] = field(default_factory=dict)


class StageError(Exception):
    """A stage failed: ``code`` says which (stable, for counting), ``message`` says why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def of(cls, err: Exception) -> StageError:
        """``err`` itself if it is a StageError, else an internal error wrapping it."""
        if isinstance(err, StageError):
            return err
        wrapped = cls(ErrorCode.INTERNAL, f"{type(err).__name__}: {err}")
        wrapped.__cause__ = err
        return wrapped


EventSink = Callable[[StageEvent], None]


@contextmanager
def stage(code: ErrorCode) -> Iterator[None]:
    """Turn any failure inside into a :class:`StageError` with ``code`` (cancellation passes)."""
    try:
        yield
    except (StageError, asyncio.CancelledError):
        raise
    except Exception as err:
        raise StageError(code, f"{type(err).__name__}: {err}") from err
