"""Whisper's encoder reads the utterance plus its padding, not the 30 s window (what it costs in
words: python -m appliance.bench.stt_window)."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.transcribe import Segment

from appliance.engines.faster_whisper_stt import (
    FULL_WINDOW_FRAMES,
    encoder_window,
    ran_on,
    token_limit,
)


def window(content_frames: int, value: float = 0.3) -> np.ndarray:
    """A segment as faster-whisper hands it to the encoder: audio, then zero frames to 30 s."""
    features = np.zeros((80, FULL_WINDOW_FRAMES), np.float32)
    features[:, :content_frames] = value
    return features


@pytest.mark.parametrize(("content", "pad_s", "frames"), [
    (150, 1.0, 300),  # 1.5 s of audio + 1 s, up to whole seconds
    (200, 1.0, 300),
    (150, 0.0, 200),
    (101, 0.5, 200),
    (2950, 1.0, FULL_WINDOW_FRAMES),  # never more than the window
    (150, 30.0, FULL_WINDOW_FRAMES),  # 30 s of padding: the full window
])
def test_the_window_is_the_audio_and_its_padding(content: int, pad_s: float,
                                                 frames: int) -> None:
    cut = encoder_window(window(content), pad_s)
    assert cut.shape == (80, frames)
    assert np.all(cut[:, :content] == 0.3) and not np.any(cut[:, content:])


def test_digital_silence_is_audio_not_padding() -> None:
    """Silence the caller sent normalises to -1.5, never 0: it stays in the window."""
    features = window(100)
    features[:, 100:450] = -1.5
    assert encoder_window(features, 0.0).shape[-1] == 500


def test_a_batch_keeps_its_leading_axes() -> None:
    batch = window(120)[None]
    assert encoder_window(batch, 1.0).shape == (1, 80, 300)


def test_only_padding_leaves_the_padding() -> None:
    assert encoder_window(window(0), 1.0).shape[-1] == 100


def segment(text: str, tokens: int = 8, compression: float = 1.2,
            logprob: float = -0.3) -> Segment:
    return Segment(id=1, seek=0, start=0.0, end=2.0, text=text, tokens=list(range(tokens)),
                   avg_logprob=logprob, compression_ratio=compression, no_speech_prob=0.01,
                   words=None, temperature=0.0)


def test_a_plain_transcription_is_trusted() -> None:
    assert ran_on([segment(" Are you open on Saturday?")], token_limit(2.0)) is None
    # a short repeat a caller says ("no, no") is not a loop
    assert ran_on([segment(" No, no, I mean Saturday.")], token_limit(2.0)) is None


@pytest.mark.parametrize(("seg", "why"), [
    (segment(" Are you open", tokens=token_limit(2.0)), "reached"),
    (segment(" Are you open on Saturday?", compression=2.6), "checks"),
    (segment(" Are you open on Saturday?", logprob=-1.4), "checks"),
    (segment(" Is there out for seating? Is there out for seating? Is there"), "repeated"),
])
def test_a_short_window_that_ran_on_is_redone(seg: Segment, why: str) -> None:
    assert why in (ran_on([seg], token_limit(2.0)) or "")


def test_the_token_limit_grows_with_the_audio() -> None:
    assert token_limit(0.0) == 16 and token_limit(20.0) == 176
