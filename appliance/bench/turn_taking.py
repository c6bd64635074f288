"""How well the end of a caller's turn is found: delay after finished questions, cut-offs of
callers who pause mid-sentence — with the turn model and with a fixed silence.

The test set is spoken at run time (no recorded audio is committed) by two unrelated voices,
the default Piper voice and espeak-ng, so the model is not judged on one synthesizer's prosody.
Each utterance takes the path a caller's audio takes (8 kHz μ-law, then the server's
upsampler), then goes through the real Silero VAD and the real turn model. The endpointer is
replayed on a simulated clock: each verdict lands as long after its pause as the model really
took here (features included), so the delays include the model's cost on this CPU while the run
takes seconds, not the real time of every utterance.

    python -m appliance.bench.turn_taking [--json out.json]

Nothing here is tuned on this set: the thresholds are the shipped defaults.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from appliance.bench.utterances import LINES
from appliance.config import Settings, load_settings
from appliance.core.audio import ULAW_SILENCE, Ulaw8kTo16k, frames, is_voiced, pcm16_to_ulaw8k
from appliance.core.listener import endpoint_config
from appliance.core.turns import EndpointConfig, Endpointer, TurnEvent
from appliance.engines.base import TurnDetector, Vad

FRAME_S = 0.02
LEAD_S = 0.5  # silence before the caller speaks
TAIL_S = 2.0  # silence after: longer than any end-of-turn wait
PAUSES_S = (0.3, 0.6)  # mid-sentence pauses: a breath (shorter than the fixed 400 ms), a search

# Finished questions and statements: a listener takes the turn at once.
# The benchmark callers' first six questions, plus more of the same kind.
COMPLETE: tuple[str, ...] = (
    *LINES[:6],
    "Is there parking near the office?",
    "I need to cancel my appointment on Thursday.",
    "Could you tell me the price of a whitening treatment?",
    "My daughter needs a checkup next week.",
    "Thank you, that's all I needed.",
    "Do you have any openings on Friday morning?",
)
# The same kind of requests with a pause (each of PAUSES_S) where no listener takes the turn.
PAUSED: tuple[tuple[str, str], ...] = (
    ("I'd like to book", "a cleaning for Tuesday."),
    ("Can I get an appointment for", "my daughter next week?"),
    ("My insurance is", "Delta Dental, do you take it?"),
    ("I was wondering if you could", "tell me your hours on Saturday."),
    ("I need to cancel my appointment on", "Thursday afternoon."),
    ("Do you have any openings on", "Friday morning?"),
    ("How much does a", "root canal cost?"),
    ("I think I chipped my", "front tooth yesterday."),
    ("Is it possible to move my cleaning to", "next Monday?"),
    ("My son has a toothache and", "we need to see someone today."),
    ("Could you tell me the price of", "a whitening treatment?"),
    ("The reason I'm calling is", "my crown fell out."),
)

Speak = Callable[[str], tuple[np.ndarray, int]]  # text -> int16 samples and their rate


class VoiceError(RuntimeError):
    """A voice for the test set is not available; the message says how to get it."""


def piper_voice(settings: Settings) -> Speak:
    from appliance.bench.utterances import voice_path
    from appliance.engines.piper_tts import PiperTts

    return PiperTts(voice_path(settings), threads=settings.tts_threads).synthesize_pcm


def espeak_voice() -> Speak:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VoiceError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")

    def speak(text: str) -> tuple[np.ndarray, int]:
        wav = subprocess.run([exe, "-v", "en-us", "--stdout", text],
                             check=True, capture_output=True, timeout=30).stdout
        with wave.open(io.BytesIO(wav)) as reader:  # espeak streams: its header's size is bogus
            audio = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
            return audio, reader.getframerate()

    return speak


VOICES = ("piper", "espeak-ng")


def voices(settings: Settings, names: Sequence[str]) -> dict[str, Speak]:
    """The named voices of a spoken test set (:data:`VOICES`); VoiceError if one is missing."""
    makers: dict[str, Callable[[], Speak]] = {"piper": lambda: piper_voice(settings),
                                              "espeak-ng": espeak_voice}
    return {name: makers[name]() for name in names}


@dataclass(frozen=True, slots=True)
class Spoken:
    """One test utterance as the server hears it, and where its pieces of speech lie."""

    text: str
    voice: str
    complete: bool
    pause_s: float  # between its pieces (0: one piece)
    audio: np.ndarray  # 16 kHz float32, out of the server's upsampler
    spans: tuple[tuple[float, float], ...]  # (start, end) seconds of each voiced piece


def _voiced_ulaw(text: str, speak: Speak) -> bytes:
    """``text`` spoken, as μ-law 8 kHz frames trimmed to its voiced part."""
    chunks = list(frames(pcm16_to_ulaw8k(*speak(text))))
    voiced = [i for i, chunk in enumerate(chunks) if is_voiced(chunk)]
    if not voiced:
        raise VoiceError(f"{text!r}: the voice produced no audible speech")
    return b"".join(chunks[voiced[0]:voiced[-1] + 1])


def compose(pieces: Sequence[str], speak: Speak, voice: str, pause_s: float = 0.0) -> Spoken:
    silence = bytes([ULAW_SILENCE]) * int(8000 * FRAME_S)
    ulaw, spans, t = b"", [], LEAD_S
    ulaw += silence * round(LEAD_S / FRAME_S)
    for i, piece in enumerate(pieces):
        if i:
            ulaw += silence * round(pause_s / FRAME_S)
            t += pause_s
        said = _voiced_ulaw(piece, speak)
        spans.append((t, t + len(said) / 8000))
        ulaw += said
        t += len(said) / 8000
    ulaw += silence * round(TAIL_S / FRAME_S)
    upsampler = Ulaw8kTo16k()
    audio = np.concatenate([upsampler.process(frame) for frame in frames(ulaw)])
    return Spoken(" ... ".join(pieces), voice, len(pieces) == 1, pause_s, audio, tuple(spans))


def test_set(voices: dict[str, Speak]) -> list[Spoken]:
    out = []
    for name, speak in voices.items():
        out += [compose([text], speak, name) for text in COMPLETE]
        out += [compose(pieces, speak, name, pause) for pause in PAUSES_S for pieces in PAUSED]
    return out


@dataclass
class Outcome:
    text: str
    voice: str
    complete: bool
    pause_s: float
    ends: list[float] = field(default_factory=list)  # seconds into the clip
    verdicts: list[float] = field(default_factory=list)  # the model's probability per pause
    inference_ms: list[float] = field(default_factory=list)
    cut_off: bool = False  # the turn ended inside the utterance, before its last piece
    delay_s: float | None = None  # end of the last piece's speech → end of turn


def replay(spoken: Spoken, vad: Vad, turn: TurnDetector | None, config: EndpointConfig,
           preroll_s: float = 0.3) -> Outcome:
    """Run the endpointer over ``spoken`` as the Listener does, on a simulated clock."""
    stream, endpointer = vad.stream(), Endpointer(config)
    window_s = stream.window_samples / 16000
    outcome = Outcome(spoken.text, spoken.voice, spoken.complete, spoken.pause_s)
    t, start, due = 0.0, 0.0, None  # due: (time, pause, probability) of a verdict in flight
    for chunk in np.array_split(spoken.audio, max(1, len(spoken.audio) // 320)):
        for probability in stream.probabilities(chunk):
            t += window_s
            if due is not None and t >= due[0]:
                endpointer.verdict(due[1], due[2])
                due = None
            event = endpointer.feed(window_s, probability)
            if event is TurnEvent.SPEECH_START:
                start = max(0.0, t - config.min_speech_s - preroll_s)
            elif event is TurnEvent.PAUSE and turn is not None:
                began = time.perf_counter()
                verdict = turn.completion(spoken.audio[int(start * 16000):int(t * 16000)])
                took = time.perf_counter() - began
                outcome.verdicts.append(verdict)
                outcome.inference_ms.append(took * 1000)
                due = (t + took, endpointer.pauses, verdict)
            elif event is TurnEvent.SPEECH_END:
                outcome.ends.append(t)
                due = None
    last_start, last_end = spoken.spans[-1]
    outcome.cut_off = any(end < last_start for end in outcome.ends)
    after = [end for end in outcome.ends if end >= last_end]
    outcome.delay_s = (after[0] - last_end) if after else None
    return outcome


def configs(settings: Settings) -> dict[str, EndpointConfig]:
    """The shipped turn model and, for comparison, the fixed silence it replaces."""
    return {"turn-model": endpoint_config(settings, turn_model=True),
            f"fixed-{settings.endpoint_silence_ms}ms": endpoint_config(settings, turn_model=False)}


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    complete = [o for o in outcomes if o.complete]
    paused = [o for o in outcomes if not o.complete]
    delays = [o.delay_s * 1000 for o in complete if o.delay_s is not None]
    paused_delays = [o.delay_s * 1000 for o in paused if o.delay_s is not None and not o.cut_off]
    inference = [ms for o in outcomes for ms in o.inference_ms]

    def cut_off(pause_s: float) -> float | None:
        some = [o for o in paused if o.pause_s == pause_s]
        return (sum(o.cut_off for o in some) / len(some)) if some else None

    return {
        "complete": len(complete),
        "paused": len(paused),
        "complete_end_ms_p50": _pct(delays, 50),
        "complete_end_ms_p90": _pct(delays, 90),
        "paused_end_ms_p50": _pct(paused_delays, 50),
        "cut_off_rate": (sum(o.cut_off for o in paused) / len(paused)) if paused else None,
        **{f"cut_off_rate_{round(p * 1000)}ms": cut_off(p) for p in PAUSES_S},
        "inference_ms_p50": _pct(inference, 50),
        "inference_ms_p90": _pct(inference, 90),
    }


def run(settings: Settings, voice_names: Sequence[str] = ("piper", "espeak-ng")) -> dict[str, Any]:
    from appliance.engines.silero_vad import SileroVad
    from appliance.engines.smart_turn import SmartTurn
    from appliance.models.resolve import resolve_models

    paths = resolve_models(settings)
    spoken = test_set(voices(settings, voice_names))
    vad, turn = SileroVad(paths.vad), SmartTurn(paths.turn)
    report: dict[str, Any] = {"schema": "appliance-turn-taking/1", "pauses_s": PAUSES_S,
                              "results": {}, "utterances": []}
    for name, config in configs(settings).items():
        outcomes = [replay(s, vad, turn if config.turn_model else None, config,
                           settings.preroll_ms / 1000) for s in spoken]
        report["results"][name] = {
            "all": summarize(outcomes),
            **{voice: summarize([o for o in outcomes if o.voice == voice])
               for voice in voice_names},
        }
        report["utterances"] += [{"config": name, **asdict(o)} for o in outcomes]
    return report


def table(report: dict[str, Any]) -> str:
    pauses = "/".join(f"{round(p * 1000)}" for p in PAUSES_S)
    head = (f"{'config':<16}{'voice':<11}{'complete: end p50/p90 ms':>26}"
            f"{'cut off (' + pauses + ' ms pause)':>28}{'end p50 ms':>12}"
            f"{'model ms p50/p90':>18}")
    lines = [head, "-" * len(head)]

    def num(value: float | None, fmt: str = ".0f") -> str:
        return "-" if value is None else format(value, fmt)

    for name, by_voice in report["results"].items():
        for voice, s in by_voice.items():
            rates = [s[f"cut_off_rate_{round(p * 1000)}ms"] for p in PAUSES_S]
            cut = " / ".join("-" if r is None else f"{r:.0%}" for r in rates)
            lines.append(
                f"{name:<16}{voice:<11}"
                f"{num(s['complete_end_ms_p50']) + ' / ' + num(s['complete_end_ms_p90']):>26}"
                f"{cut:>28}{num(s['paused_end_ms_p50']):>12}"
                f"{num(s['inference_ms_p50']) + ' / ' + num(s['inference_ms_p90']):>18}")
    return "\n".join(lines)


def spoken_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a measurement on a test set spoken at run time (this one, stt_window)."""
    parser.add_argument("--json", help="also write the full report (every utterance) here")
    parser.add_argument("--voices", default="piper,espeak-ng", type=_names,
                        help="comma-separated: piper, espeak-ng (default: both)")


def _names(value: str) -> list[str]:
    names = [name for name in value.split(",") if name]
    if unknown := [name for name in names if name not in VOICES]:
        raise argparse.ArgumentTypeError(f"unknown voice {', '.join(unknown)} "
                                         f"(choose from {', '.join(VOICES)})")
    return names


def measure(parser: argparse.ArgumentParser, run: Callable[[], dict[str, Any]],
            table: Callable[[dict[str, Any]], str], json_path: str | None) -> int:
    """Run a spoken-set measurement and print it; a voice that is not installed is a clear
    error (exit 2), not a traceback."""
    try:
        report = run()
    except VoiceError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print_report(table(report), report, json_path)
    return 0


def print_report(table_text: str, report: dict[str, Any], json_path: str | None) -> None:
    print(table_text)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
        print(f"report: {json_path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.bench.turn_taking",
                                     description=__doc__.split("\n\n")[0])
    spoken_set_arguments(parser)
    args = parser.parse_args(argv)
    return measure(parser, lambda: run(load_settings(), args.voices), table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
