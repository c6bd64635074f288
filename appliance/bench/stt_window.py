"""What Whisper's encoder window costs and buys: words and time with the full 30 s window and
with the utterance plus a little padding (engines/faster_whisper_stt.py, ``encoder_window``).

The callers' questions of the evaluation businesses (eval/) are spoken at run time by two
unrelated voices, the default Piper voice and espeak-ng, and take the phone path (8 kHz μ-law,
then the server's upsampler) with 0.5 s of silence before the speech and 0.3 s after, as an
utterance reaches STT at the end of a turn. Each is transcribed with every padding asked for and
with the full window; reported per padding and split: word error rate against the question's
text, how many transcripts differ from the full window's, how many ran on in the short window
(the token limit, a repeat, Whisper's own checks) and were done again with the full window, and
the time per transcription.

The default padding is chosen on the ``tuning`` businesses' questions (and the benchmark
callers' lines); the ``report`` businesses' questions are the number that counts.

    python -m appliance.bench.stt_window [--pads 2,4,6,8] [--split report] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jiwer
import numpy as np

from appliance.bench.turn_taking import Speak, compose, measure, spoken_set_arguments, voices
from appliance.bench.utterances import LINES
from appliance.config import Settings, load_settings
from appliance.core.audio import MODEL_RATE
from appliance.engines.faster_whisper_stt import FRAMES_PER_S, FULL_WINDOW_FRAMES, FasterWhisperStt
from appliance.evaluation.dataset import load_businesses

TAIL_S = 0.3  # silence after the speech: the turn ended ~0.2-0.3 s into the pause
FULL = FULL_WINDOW_FRAMES / FRAMES_PER_S  # a padding this long is Whisper's full window
NORMALISE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                           jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                           jiwer.ReduceToListOfListOfWords()])


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    split: str  # "tuning" | "report"
    voice: str
    audio: np.ndarray  # 16 kHz float32, as STT gets it


def sentences(split: str | None) -> list[tuple[str, str]]:
    """(text, split) of every question asked of the evaluation businesses, plus the benchmark
    callers' lines (tuning: the default was chosen with them in view)."""
    out = [(q.text, b.split) for b in load_businesses(split=split) for q in b.questions]
    if split in (None, "tuning"):
        out += [(line, "tuning") for line in LINES]
    return out


def speak_all(texts: Sequence[tuple[str, str]], voices: dict[str, Speak]) -> list[Sample]:
    samples = []
    for voice, speak in voices.items():
        for text, split in texts:
            spoken = compose([text], speak, voice)
            end = round((spoken.spans[-1][1] + TAIL_S) * MODEL_RATE)  # LEAD_S before it stays
            samples.append(Sample(text, split, voice, spoken.audio[:end]))
    return samples


def _wer(references: list[str], hypotheses: list[str]) -> float:
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if NORMALISE(r)[0]]
    return float(jiwer.wer([r for r, _ in pairs], [h or "-" for _, h in pairs],
                           reference_transform=NORMALISE, hypothesis_transform=NORMALISE))


def run(settings: Settings, pads: Sequence[float], split: str | None,
        voice_names: Sequence[str] = ("piper", "espeak-ng")) -> dict[str, Any]:
    from appliance.models.resolve import resolve_models

    samples = speak_all(sentences(split), voices(settings, voice_names))
    model_dir = resolve_models(settings).stt
    configs = [FULL, *pads]
    transcripts: dict[float, list[str]] = {}
    seconds: dict[float, list[float]] = {}
    retried: dict[float, list[bool]] = {}
    for pad in configs:
        stt = FasterWhisperStt(model_dir, device=settings.device, threads=settings.stt_threads,
                               beam_size=settings.stt_beam_size, language=settings.stt_language,
                               pad_s=pad)
        stt.transcribe(samples[0].audio)  # warm
        transcripts[pad], seconds[pad], retried[pad] = [], [], []
        for sample in samples:
            before, started = stt.retried, time.perf_counter()
            transcripts[pad].append(stt.transcribe(sample.audio).text)
            seconds[pad].append(time.perf_counter() - started)
            retried[pad].append(stt.retried > before)
    report: dict[str, Any] = {"schema": "appliance-stt-window/1", "tail_s": TAIL_S,
                              "results": [], "utterances": []}
    groups = sorted({(s.split, s.voice) for s in samples}) + [("all", "all")]
    for pad in configs:
        for group_split, voice in groups:
            index = [i for i, s in enumerate(samples)
                     if group_split == "all" or (s.split, s.voice) == (group_split, voice)]
            report["results"].append({
                "pad_s": None if pad == FULL else pad, "split": group_split, "voice": voice,
                "n": len(index),
                "wer": round(_wer([samples[i].text for i in index],
                                  [transcripts[pad][i] for i in index]), 4),
                "differ_from_full": sum(
                    NORMALISE(transcripts[pad][i]) != NORMALISE(transcripts[FULL][i])
                    for i in index),
                "retried_full": sum(retried[pad][i] for i in index),
                "ms_p50": round(statistics.median(seconds[pad][i] for i in index) * 1000, 1),
                "ms_max": round(max(seconds[pad][i] for i in index) * 1000, 1),
            })
    for i, sample in enumerate(samples):
        report["utterances"].append({
            "text": sample.text, "split": sample.split, "voice": sample.voice,
            "audio_s": round(sample.audio.size / MODEL_RATE, 2),
            **{("full" if pad == FULL else f"pad_{pad:g}"): transcripts[pad][i]
               for pad in configs}})
    return report


def table(report: dict[str, Any]) -> str:
    head = (f"{'window':<18}{'split':<8}{'voice':<11}{'n':>5}{'WER':>8}"
            f"{'differ from full':>18}{'redone full':>13}{'ms p50':>9}{'ms max':>9}")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        window = "full 30 s" if r["pad_s"] is None else f"audio + {r['pad_s']:g} s"
        lines.append(f"{window:<18}{r['split']:<8}{r['voice']:<11}{r['n']:>5}{r['wer']:>8.1%}"
                     f"{r['differ_from_full']:>18}{r['retried_full']:>13}{r['ms_p50']:>9.0f}"
                     f"{r['ms_max']:>9.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.bench.stt_window",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pads", default="2,4,6,8",
                        help="comma-separated seconds of padding to try (default: 2,4,6,8)")
    parser.add_argument("--split", choices=("tuning", "report"),
                        help="only this split's questions (default: both)")
    spoken_set_arguments(parser)
    args = parser.parse_args(argv)
    pads = [float(p) for p in args.pads.split(",") if p]
    return measure(parser, lambda: run(load_settings(), pads, args.split, args.voices), table,
                   args.json)


if __name__ == "__main__":
    raise SystemExit(main())
