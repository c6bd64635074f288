"""One turn's latencies as a typed record: the one list of fields that both sessions fill, the
call log stores and the benchmark reads.

The keys used to be kept in step by hand in three places, and one drifted: ``retrieval_s`` was
measured for every turn and never stored. A field added here reaches all three (the call log
needs a migration for its column).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class SentenceVoice:
    """Who spoke one sentence of a reply, and how soon its first audio went out."""

    provider: str
    first_audio_s: float | None


@dataclass(slots=True)
class TurnMetrics:
    """Seconds per stage of one assistant turn; None where the stage did not run."""

    endpoint_s: float | None = None  # the caller's voice ended → the turn was declared over
    stt_s: float | None = None  # declared over → words (less when STT started at a pause)
    retrieval_s: float | None = None  # knowledge-base search and fact-line choice
    llm_ttft_s: float | None = None  # token stream asked for → first token
    first_sentence_s: float | None = None  # token stream asked for → first whole sentence
    tts_first_audio_s: float | None = None  # first sentence ready → its first audio sent
    v2v_s: float | None = None  # the caller's voice ended → the reply's first audio sent
    first_token_sent_s: float | None = None  # relay: the caller's prompt → first token sent
    tts_provider: str | None = None  # who spoke the first sentence
    speculative: bool | None = None  # the answer was worked out at the pause, before the end of
    # the turn was confirmed (core/speculation.py); its retrieval_s is then the wait left
    # How the model read the prompt of a generated answer (engines/base.py PromptUsage): its
    # length, the prefix reused from the cache, the tokens read, their time and threads.
    prompt_tokens: int | None = None
    prompt_reused: int | None = None
    prompt_evaluated: int | None = None
    prompt_eval_s: float | None = None
    prompt_threads: int | None = None
    tts_sentences: list[SentenceVoice] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The measured fields as call-log columns (sentences as a JSON list, flags as 0/1, the
        INTEGER both back ends store them in); {} if none."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tts_sentences"}
        row = {name: int(v) if isinstance(v, bool) else v
               for name, v in values.items() if v is not None}
        if self.tts_sentences:
            row["tts_sentences"] = json.dumps([asdict(s) for s in self.tts_sentences])
        return row


METRIC_FIELDS = tuple(f.name for f in fields(TurnMetrics))
# The stages on a Media Streams turn's critical path, in pipeline order (the benchmark's rows).
STAGES = ("endpoint_s", "stt_s", "retrieval_s", "llm_ttft_s", "first_sentence_s",
          "tts_first_audio_s")
# The split of a generated answer's first token (rows of the benchmark when the model answered).
PROMPT_FIELDS = ("prompt_tokens", "prompt_reused", "prompt_evaluated", "prompt_eval_s",
                 "prompt_threads")
