"""``appliance doctor``: load and exercise every engine of the active preset, one child each."""

from __future__ import annotations

import argparse
import sys

import msgspec

from appliance.config import Settings
from appliance.doctor.checks import CHECKS
from appliance.doctor.runner import CheckResult, check_model_files, run_check


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        help="prove every engine of the active preset runs on this machine",
        description="Checks the model files (size and sha256), then loads and exercises each "
        "engine once in its own child process: VAD on 1 s of audio, the end-of-turn model and "
        "STT on a shipped clip, one LLM token, one TTS word, one embedding, the call log "
        "writable, the KB readable. A "
        "crash (e.g. SIGILL from a CPU-specific build) fails that check, named. Exits 1 on any "
        "failure.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), metavar="CHECK",
                        help=f"run only this check (repeatable): {', '.join(CHECKS)}")
    parser.set_defaults(func=doctor)


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    results: list[CheckResult] = []
    if not args.only:
        results.append(_shown(check_model_files(settings), args.json))
    for check in args.only or CHECKS:
        results.append(_shown(run_check(check, settings), args.json))
    if args.json:
        print(msgspec.json.encode(results).decode())
    failed = [r.check for r in results if not r.ok]
    if failed and not args.json:
        print(f"appliance doctor: {len(failed)} check(s) failed: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed else 0


def _shown(result: CheckResult, quiet: bool) -> CheckResult:
    """Print each line as it completes: a slow model load shows progress, not silence."""
    if not quiet:
        status = "ok  " if result.ok else "FAIL"
        device = f" [{result.device}]" if result.device else ""
        print(f"{status} {result.check:<6} {result.seconds:6.2f} s{device}  {result.detail}",
              flush=True)
    return result
