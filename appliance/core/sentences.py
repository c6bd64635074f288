"""Streamed LLM tokens → speakable pieces, so TTS can start on the first one at once."""

from __future__ import annotations

import re
from collections.abc import Iterator

_SENTENCE_END = re.compile(r"([.!?]+[\"')\]]*)(\s+|$)")
_CLAUSE_END = re.compile(r"([,;:])\s+")
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "st", "ave", "no", "vs", "etc", "e.g", "i.e", "a.m",
                  "p.m"}
_MARKUP = re.compile(r"[*_#`]+|<[^>]*>")


def clean_for_speech(text: str) -> str:
    """Strip markdown and tags a model may emit; a voice would read them out literally."""
    return re.sub(r"\s+", " ", _MARKUP.sub("", text)).strip()


class SentenceChunker:
    """Accumulates tokens and yields complete sentences.

    The first piece of a reply may be cut at a clause boundary once it has ``first_min_words``
    words: speaking a short clause early beats waiting for a long sentence to finish. That holds
    whether the words stream in (a model) or come at once (an extractive answer, a whole fact
    line): Piper takes ~80 ms per second of speech on a free core, and the bench's "Harbor Dental
    is in-network with Delta Dental PPO, Cigna Dental PPO, …" took 0.92 s to its first audio as
    one sentence.
    """

    def __init__(self, first_min_words: int = 6, min_chars: int = 2) -> None:
        self._buffer = ""
        self._emitted = 0
        self._first_min_words = first_min_words
        self._min_chars = min_chars

    def push(self, token: str) -> Iterator[str]:
        self._buffer += token
        while piece := self._next_piece():
            yield piece

    def flush(self) -> Iterator[str]:
        rest = clean_for_speech(self._buffer)
        self._buffer = ""
        if len(rest) >= self._min_chars and any(ch.isalnum() for ch in rest):
            self._emitted += 1
            yield rest

    def _next_piece(self) -> str | None:
        end = self._sentence_end()
        if self._emitted == 0:
            for match in _CLAUSE_END.finditer(self._buffer):
                if end is not None and match.end() > end:
                    break
                if len(self._buffer[: match.start()].split()) >= self._first_min_words:
                    return self._take(match.end())
        return None if end is None else self._take(end)

    def _sentence_end(self) -> int | None:
        """Where the first complete sentence in the buffer ends, if one does."""
        for match in _SENTENCE_END.finditer(self._buffer):
            if not match.group(2):
                return None  # the sentence mark may still be followed by more (e.g. "3.50")
            head = self._buffer[: match.start(1)]
            last_word = head.rsplit(" ", 1)[-1].lower().rstrip(".")
            if match.group(1) == "." and (last_word in _ABBREVIATIONS or len(last_word) == 1):
                continue
            return match.end()
        return None

    def _take(self, end: int) -> str | None:
        piece, self._buffer = clean_for_speech(self._buffer[:end]), self._buffer[end:]
        if len(piece) < self._min_chars or not any(ch.isalnum() for ch in piece):
            return None
        self._emitted += 1
        return piece
