"""Run doctor checks in child processes and turn every way a child can end into a clear result."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import msgspec

from appliance.config import Settings
from appliance.models.resolve import verify_settings

CHECK_TIMEOUT_S = 600.0  # a 7B GGUF from a cold disk takes minutes; a hang still ends

REBUILD = ("rebuild llama-cpp-python with portable flags: `rm -rf .wheels .venv && make install` "
           "(README: Install)")
SIGNAL_HINTS = {
    signal.SIGILL: "this build uses CPU instructions this machine cannot run; " + REBUILD,
    # A native build on a VM that advertises AMX it cannot run dies this way too (measured:
    # GGML_NATIVE=ON on a Sapphire Rapids VM segfaults in its first decode).
    signal.SIGSEGV: "the engine crashed: a corrupt model file (run `appliance models verify`) "
                    "or a build for another CPU (" + REBUILD + ")",
    signal.SIGBUS: "the model file changed or vanished while mapped; run `appliance models verify`",
    signal.SIGKILL: "killed (out of memory?)",
    signal.SIGABRT: "the engine aborted (see its output above)",
}


class CheckResult(msgspec.Struct, frozen=True):
    """One line of the doctor's report."""

    check: str
    ok: bool
    seconds: float
    device: str = ""
    detail: str = ""


def child_argv(check: str) -> list[str]:
    return [sys.executable, "-m", "appliance.doctor.child", check]


def run_check(check: str, settings: Settings, argv: Sequence[str] | None = None,
              timeout: float = CHECK_TIMEOUT_S) -> CheckResult:
    """Run ``check`` in a child; a crash, a signal or a timeout is a failed result, not a raise."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(list(argv or child_argv(check)), input=msgspec.json.encode(settings),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return CheckResult(check, False, time.perf_counter() - started,
                           detail=f"no answer within {timeout:.0f} s (hung)")
    seconds = time.perf_counter() - started
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode)
        hint = SIGNAL_HINTS.get(sig, "the engine crashed")
        return CheckResult(check, False, seconds, detail=f"killed by {sig.name}: {hint}")
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = msgspec.json.decode(lines[-1]) if lines else {}
    except msgspec.DecodeError:
        result = {}
    if proc.returncode == 0 and "detail" in result:
        return CheckResult(check, True, seconds, result.get("device", ""), result["detail"])
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
    detail = result.get("error") or (tail[0] if tail else f"exited with {proc.returncode}")
    return CheckResult(check, False, seconds, detail=detail)


def check_model_files(settings: Settings) -> CheckResult:
    """Presence, size and sha256 of the selected models (serving checks only sizes, for speed)."""
    started = time.perf_counter()
    try:
        problems = verify_settings(settings)
    except Exception as err:  # a broken manifest is a failed check too
        return CheckResult("models", False, time.perf_counter() - started, detail=str(err))
    seconds = time.perf_counter() - started
    if problems:
        first = problems[0]
        detail = f"{len(problems)} problem(s); first: {first.model}: {first.path}: {first.reason}"
        return CheckResult("models", False, seconds, detail=f"{detail} — fix: {first.fix}")
    return CheckResult("models", True, seconds, "disk", f"{settings.models} preset: sha256 match")
