# fxkernels developer commands. `make demo` and `make test` are the two fresh-machine commands of README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MAX_JOBS ?= 2
TORCH_SPEC ?= torch==2.14.1

.PHONY: install demo test test-fast bench lint format aot clean

# Creates the venv, installs torch and the package (CPU kernels always, CUDA kernels when nvcc is found).
# The compiler log goes to build.log; its ptxas register/spill lines are printed.
install:
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" ninja numpy pillow tqdm pytest pytest-benchmark ruff
	@echo "building fxkernels._C (MAX_JOBS=$(MAX_JOBS), log: build.log) ..."
	@MAX_JOBS=$(MAX_JOBS) $(BIN)/python -m pip install -v -e ".[test]" --no-build-isolation > build.log 2>&1 \
		|| (tail -n 60 build.log; echo "build failed, full log in build.log"; exit 1)
	@grep -E "\*\*\* fxkernels setup:" build.log | sort -u || true
	@echo "ptxas (CUDA kernels: registers / spills / shared memory):"
	@grep -E "ptxas info *: (Compiling|Function properties|Used)|spill" build.log | sed 's/^ *//' | uniq || echo "  (no CUDA kernels built)"
	$(BIN)/python -m fxkernels

# The main job: train MOL (official layout, fxkernels backend) on synthetic micro-expressions for a few minutes
# on CPU, with the steps/s of fxkernels vs the reference backend; then the per-op kernel demo.
# Demo-only settings (see README): temporally centred input and landmark weight 1 instead of the paper's 68, so
# that the expression head learns within the few-minute budget.
DEMO_ARGS ?= --data synthetic --protocol split --classes 3 --subjects 6 --clips 12 --t 4 --epochs 6 \
	--batch-size 4 --amplitude 6 --noise 0 --jitter 0 --lr 1e-3 --input-norm temporal --landmark-weight 1 \
	--compare-backends 3 --out runs/demo
demo: install
	$(BIN)/python -m models.train mol $(DEMO_ARGS)
	$(BIN)/python -m fxkernels demo

test: install
	$(BIN)/python -m pytest tests -q -ra

test-fast: install
	$(BIN)/python -m pytest tests -q -ra -m "not slow" -x

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
