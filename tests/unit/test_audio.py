"""μ-law codec against the G.711 reference, resampler lengths and seams, framing."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.core.audio import (
    FRAME_BYTES,
    ULAW_SILENCE,
    Ulaw8kTo16k,
    frames,
    is_voiced,
    pcm16_to_ulaw8k,
    resample,
    trim_leading_silence,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_float,
)


def reference_linear2ulaw(pcm: int) -> int:
    """Scalar transcription of Sun's g711.c ``linear2ulaw`` (16-bit input, CLIP 32635)."""
    bias, clip = 0x84, 32635
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, clip) + bias
    seg_end = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)
    seg = next(s for s, end in enumerate(seg_end) if pcm <= end)
    return ((seg << 4) | ((pcm >> (seg + 3)) & 0x0F)) ^ mask


def reference_ulaw2linear(code: int) -> int:
    """Scalar transcription of Sun's g711.c ``ulaw2linear``."""
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("code", "linear"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xF0, 120), (0x70, -120)],
)
def test_decode_known_values(code: int, linear: int) -> None:
    assert int(ulaw_decode(bytes([code]))[0]) == linear


@pytest.mark.parametrize(
    ("linear", "code"), [(0, 0xFF), (-1, 0x7F), (32767, 0x80), (-32768, 0x00), (120, 0xF0)]
)
def test_encode_known_values(linear: int, code: int) -> None:
    assert ulaw_encode(np.array([linear], dtype=np.int16)) == bytes([code])


def test_decode_matches_reference_for_every_code() -> None:
    expected = [reference_ulaw2linear(c) for c in range(256)]
    assert ulaw_decode(bytes(range(256))).tolist() == expected


def test_encode_matches_reference_for_every_int16() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    expected = bytes(reference_linear2ulaw(int(v)) for v in pcm)
    assert ulaw_encode(pcm.astype(np.int16)) == expected


def test_codes_round_trip() -> None:
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F is "negative zero": encodes as 0xFF
    assert ulaw_encode(ulaw_decode(codes)) == codes


def test_round_trip_error_is_within_half_a_step() -> None:
    pcm = np.arange(-32635, 32636, dtype=np.int32)
    err = np.abs(ulaw_decode(ulaw_encode(pcm.astype(np.int16))).astype(np.int32) - pcm)
    assert np.all(err <= (np.abs(pcm) + 0x84) / 32 + 1)


def test_ulaw_to_float_range_and_snr() -> None:
    x = tone(440, 0.5, 8000)
    y = ulaw_to_float(ulaw_encode((x * 32767).astype(np.int16)))
    assert y.dtype == np.float32 and np.abs(y).max() <= 1.0
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    assert snr > 30


def test_resample_lengths() -> None:
    x = tone(300, 1.0, 22050)
    assert len(resample(x, 22050, 16000)) == 16000
    assert resample(x, 16000, 16000) is x


def test_streaming_upsampler_is_seamless_and_steady() -> None:
    ulaw = ulaw_encode((tone(440, 1.0, 8000) * 32767).astype(np.int16))
    framed = Ulaw8kTo16k()
    chunks = [framed.process(f) for f in frames(ulaw)]
    assert all(c.dtype == np.float32 for c in chunks)
    assert [len(c) for c in chunks[2:]] == [320] * (len(chunks) - 2)  # no bursts
    streamed = np.concatenate(chunks)
    assert 16000 - 600 <= len(streamed) <= 16000  # only the filter delay is held back
    whole = Ulaw8kTo16k().process(ulaw)
    n = min(len(whole), len(streamed))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-4  # frame edges change nothing


def test_streaming_upsampler_rejects_images() -> None:
    x = tone(3000, 2.0, 8000)
    up = Ulaw8kTo16k()
    y = np.concatenate([up.process(f) for f in frames(ulaw_encode((x * 32767).astype(np.int16)))])
    spectrum = np.abs(np.fft.rfft(y[4000:20384] * np.hanning(16384)))
    freqs = np.fft.rfftfreq(16384, 1 / 16000)
    image = spectrum[np.argmin(np.abs(freqs - 5000))] / spectrum[np.argmin(np.abs(freqs - 3000))]
    assert 20 * np.log10(image) < -60


def test_pcm16_to_ulaw8k_length_and_content() -> None:
    pcm = (tone(300, 1.0, 22050) * 20000).astype(np.int16)
    out = pcm16_to_ulaw8k(pcm, 22050)
    assert abs(len(out) - 8000) <= 1
    assert is_voiced(out[1000:1160])


def test_frames_pad_the_last_frame_with_silence() -> None:
    data = bytes(range(100)) * 3 + bytes(30)
    chunks = list(frames(data))
    assert [len(c) for c in chunks] == [FRAME_BYTES, FRAME_BYTES, FRAME_BYTES]
    assert b"".join(chunks)[: len(data)] == data
    assert chunks[-1][len(data) - 2 * FRAME_BYTES :] == bytes([ULAW_SILENCE]) * 150
    assert list(frames(b"")) == []


def test_is_voiced() -> None:
    assert not is_voiced(bytes([ULAW_SILENCE]) * FRAME_BYTES)
    assert not is_voiced(b"")
    assert is_voiced(ulaw_encode((tone(500, 0.02, 8000) * 8000).astype(np.int16)))


def test_leading_silence_is_trimmed_to_just_before_the_first_sound() -> None:
    rate = 22050
    sound = (10000 * np.cos(np.arange(rate // 10) / 5)).astype(np.int16)
    quiet = np.full(rate // 20, 30, dtype=np.int16)  # 50 ms of hiss, under -40 dB of the peak
    trimmed = trim_leading_silence(np.concatenate([quiet, sound]), rate)
    keep = int(0.005 * rate)
    assert len(trimmed) == len(sound) + keep
    assert np.array_equal(trimmed[keep:], sound)


def test_audio_that_starts_loud_or_is_silent_throughout_is_kept_whole() -> None:
    loud = np.array([20000, -20000, 100, 5], dtype=np.int16)
    silent = np.zeros(400, dtype=np.int16)
    assert np.array_equal(trim_leading_silence(loud, 8000), loud)
    assert np.array_equal(trim_leading_silence(silent, 8000), silent)
    assert trim_leading_silence(np.zeros(0, dtype=np.int16), 8000).size == 0
