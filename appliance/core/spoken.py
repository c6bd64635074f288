"""What the agent said in a turn, piece by piece, and how much of it the caller heard.

One record for both front doors: Media Streams fills ``pieces`` as it plays sentences, and
ConversationRelay (where Twilio speaks) sets ``streamed`` once its text has all gone out.
Twilio echoes a mark once the audio before it has played, so each spoken piece (a sentence)
carries a mark; what the caller heard is every piece whose mark came back, plus the share of the
playing piece that its elapsed time covers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from appliance.store.metrics import TurnMetrics


@dataclass
class SpokenPiece:
    text: str
    mark: str
    seconds: float
    played: bool = False


@dataclass
class AgentTurn:
    """The assistant's side of one turn, as built and as heard."""

    idx: int
    started: float = field(default_factory=time.time)
    pieces: list[SpokenPiece] = field(default_factory=list)
    text: str = ""
    kb_chunks: list[str] = field(default_factory=list)
    metrics: TurnMetrics | None = None  # None for fixed phrases: no model in the way
    play_started: float | None = None  # monotonic time the current piece began playing
    streamed: bool = False  # relay: `last: true` went out
    recorded: bool = False

    def heard_text(self, now: float) -> str:
        """Played pieces in full, plus the share of the playing piece its elapsed time covers."""
        heard = [p.text for p in self.pieces if p.played]
        playing = next((p for p in self.pieces if not p.played), None)
        if playing is not None and self.play_started is not None and playing.seconds > 0:
            share = min(1.0, max(0.0, (now - self.play_started) / playing.seconds))
            words = playing.text.split()
            if cut := int(len(words) * share):
                heard.append(" ".join(words[:cut]))
        return " ".join(heard)
