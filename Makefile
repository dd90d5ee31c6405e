# fxkernels developer commands. `make demo` and `make test` are the two fresh-machine commands of README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MAX_JOBS ?= 2
TORCH_SPEC ?= torch==2.14.1
TORCHVISION_SPEC ?= torchvision==0.29.1
DEPS := "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)" ninja numpy pillow tqdm "matplotlib>=3.8" pytest pytest-benchmark pytest-xdist ruff
SHELL := /bin/bash

.PHONY: install reinstall demo test test-fast bench lint format aot clean FORCE

# `install` (and every target that needs the package) rebuilds only when something changed: the stamp files
# depend on the venv's requirements, setup.py, pyproject.toml, every file under csrc/ and the build settings
# (CUDA toolkit, arch list, build switches). `make reinstall` forces a rebuild.
STAMP_DIR := build
DEPS_STAMP := $(VENV)/.fxk-deps
INSTALL_STAMP := $(STAMP_DIR)/.fxk-install
BUILD_CONFIG := $(STAMP_DIR)/.fxk-build-config
DEPS_SPEC := $(STAMP_DIR)/.fxk-deps-spec
CSRC := $(shell find csrc -type f 2>/dev/null)
ifeq ($(wildcard fxkernels/_C*.so),)
$(shell rm -f $(INSTALL_STAMP))
endif

# The settings the venv and the build depend on; each file is rewritten (so what depends on it is redone) only
# when they change.
$(DEPS_SPEC): FORCE
	@mkdir -p $(STAMP_DIR)
	@echo "$(PY) $(DEPS)" > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@
$(BUILD_CONFIG): FORCE
	@mkdir -p $(STAMP_DIR)
	@{ echo "nvcc $$(command -v nvcc) CUDA_HOME=$(CUDA_HOME) CUDA_PATH=$(CUDA_PATH)"; \
	  echo "archs $(TORCH_CUDA_ARCH_LIST)"; \
	  echo "switches $(FXKERNELS_SKIP_CUDA_BUILD) $(FXKERNELS_FORCE_CUDA) $(FXKERNELS_DEBUG)"; } > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

$(DEPS_STAMP): $(DEPS_SPEC)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(DEPS)
	@touch $@

# Builds fxkernels._C (CPU kernels always, CUDA kernels when nvcc is found): one console line per compiled file,
# the full compiler log in build.log, then the ptxas figures of the CUDA kernels as a table (the per-object
# compile record, build/ptxas.json, that tests/test_cuda_build.py checks).
$(INSTALL_STAMP): $(DEPS_STAMP) $(BUILD_CONFIG) setup.py pyproject.toml $(CSRC)
	@echo "building fxkernels._C (MAX_JOBS=$(MAX_JOBS), full log: build.log) ..."
	@set -o pipefail; MAX_JOBS=$(MAX_JOBS) $(BIN)/python -m pip install -v -e ".[test]" --no-build-isolation 2>&1 \
		| tee build.log | $(BIN)/python tools/fxk_build.py progress \
		|| (tail -n 60 build.log; echo "build failed, full log in build.log"; exit 1)
	@echo "ptxas (CUDA kernels: registers / spill bytes / static shared memory, per arch):"
	@$(BIN)/python tools/fxk_build.py ptxas-table
	$(BIN)/python -m fxkernels
	@touch $@

install: $(INSTALL_STAMP)

reinstall:
	rm -f $(INSTALL_STAMP)
	$(MAKE) install

# The main job: train MOL (official layout, fxkernels backend) on synthetic micro-expressions for a few minutes
# on CPU, with the steps/s of fxkernels vs the reference backend; then the per-op kernel demo.
# Demo-only settings (see README): temporally centred input and landmark weight 1 instead of the paper's 68, so
# that the expression head learns within the few-minute budget.
DEMO_ARGS ?= --data synthetic --protocol split --classes 3 --subjects 6 --clips 12 --t 4 --epochs 6 \
	--batch-size 4 --amplitude 6 --noise 0 --jitter 0 --lr 1e-3 --input-norm temporal --landmark-weight 1 \
	--compare-backends 3 --out runs/demo --overwrite
demo: install
	$(BIN)/python -m models.train mol $(DEMO_ARGS)
	$(BIN)/python -m fxkernels demo

# Per-file progress (tests/file_progress.py: a line per finished file) and the 15 slowest tests;
# tests/conftest.py orders the long model-training and slow tests last.
PYTEST_ARGS ?= -ra --durations=15
# pytest-xdist: one worker per core, each test file on one worker (module fixtures are built once); the
# workers share the cores' threads (tests/conftest.py) and the AOT compile runs once in the background
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadfile
test: install
	$(BIN)/python -m pytest tests $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests $(XDIST) $(PYTEST_ARGS) -m "not slow" -x

bench: install
	$(BIN)/python -m pytest benchmarks -q -o python_files='bench_*.py' --benchmark-columns=min,median,iqr,rounds

aot: install
	$(BIN)/python -m fxkernels.aot

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf build dist *.egg-info fxkernels/_C*.so build.log
