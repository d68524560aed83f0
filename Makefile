# Two entry points, both working on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: setup demo test bench gpu-wheels clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-cluster.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -r requirements-cluster.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: setup
	$(BIN)/sarcograde demo --out $(DEMO_OUT)

# pytest exits 5 when it collected no test: that must fail, and it does here (non-zero).
test: setup
	MPLBACKEND=Agg $(BIN)/python -m pytest $(PYTEST_ARGS)

# Each script measures its own baseline in the same run; figures go to benchmarks/README.md.
bench: setup
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# The pure-Python packages that `benchmarks/gpu_check.sh` needs and the GPU machine (no internet,
# its own CUDA torch) lacks, as wheels in .whl/ to carry there.
gpu-wheels: setup
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
		$$(grep -E '^(monai|pydicom)==' requirements.txt)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
