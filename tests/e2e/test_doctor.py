"""`appliance doctor` through real child processes: every engine proven, every crash named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.doctor.checks import CHECKS
from appliance.doctor.runner import run_check
from tests.conftest import free_port, make_settings

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return {**env, "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_KB_DIR": str(tmp_path / "no-kb"), **extra}


def _appliance(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def _corrupt_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


def test_doctor_passes_on_the_default_models(tmp_path: Path) -> None:
    proc = _appliance(["doctor", "--json"], _env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["check"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert set(results) == {"models", *CHECKS}
    assert all(r["ok"] for r in results.values()), results
    assert results["llm"]["device"] == "cpu"
    assert "open" in results["stt"]["detail"].lower()  # the shipped clip asks when we open


def test_doctor_names_a_corrupt_gguf_and_exits_non_zero(tmp_path: Path) -> None:
    env = _env(tmp_path, APPLIANCE_LLM_MODEL=str(_corrupt_gguf(tmp_path)))
    proc = _appliance(["doctor", "--only", "llm"], env)
    assert proc.returncode == 1
    assert proc.stdout.startswith("FAIL llm"), proc.stdout
    assert "llm" in proc.stderr


def test_a_child_killed_by_sigill_is_named_with_the_fix(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    result = run_check("llm", make_settings(tmp_path), argv=crash)
    assert not result.ok
    assert "SIGILL" in result.detail and "CPU instructions" in result.detail
    assert "make install" in result.detail


def test_a_hung_child_is_a_failed_check(tmp_path: Path) -> None:
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    result = run_check("stt", make_settings(tmp_path), argv=hang, timeout=1)
    assert not result.ok and "hung" in result.detail


def test_serve_refuses_to_start_on_an_llm_it_cannot_run(tmp_path: Path) -> None:
    env = _env(tmp_path, APPLIANCE_LLM_MODEL=str(_corrupt_gguf(tmp_path)))
    proc = _appliance(["serve", "--port", str(free_port())], env)
    assert proc.returncode == 1
    assert "cannot start: LLM check failed" in proc.stderr
