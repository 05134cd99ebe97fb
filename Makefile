# Quick start: `make demo` (render the built-in sample in Paddle), `make serve` (the local web app on
# http://127.0.0.1:7860), `make test` (install + full suite) and `make test-fast` (the tier without `slow` tests).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-fast demo serve bench clean

# (Re)create the venv and install the project whenever pyproject.toml changes. The bytecode is compiled after the
# install on every core, where pip compiles one file at a time (back to back on 2 cores, 2026-12-08: 51-57 s
# against 56-64 s); files no Python 3.11 compiles (torch's tests of newer syntax) are passed over, as pip does.
# Without bytecode, and with PYTHONDONTWRITEBYTECODE set, every test process would compile torch and Paddle again.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[test,onnx]"
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	touch $(STAMP)

install: $(STAMP)

# TEST_WORKERS pytest-xdist workers, each on its own share of the usable cores, whole test modules each, the
# memory-heavy modules on one worker, the weights and graph cache built once for all (parity_tests/conftest.py).
# TEST_WORKERS=0: the whole suite in one process (slower; the machine then holds ~10 GiB at most instead of ~15).
# Threads (the worker's cores) and, on AMD, MKL's AVX2 path: set by parity_tests/conftest.py, as the command lines
# set them (conr_common.platform.cpu.prepare_math_libraries); an OMP_NUM_THREADS of your own wins.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) parity_tests

# Day-to-day tier: every test not marked `slow` (pyproject.toml's markers): 62-86 s in two workers (111 s in one process),
# idle 2-core Intel Xeon with AMX (2026-12-08). Both targets end with the suite's cost (time, each worker's peak
# memory, bytes written, temporary files left).
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) -m "not slow" parity_tests

demo: $(STAMP)
	$(PY) -m conr_app demo

serve: $(STAMP)
	$(PY) -m conr_app serve

bench: $(STAMP)
	$(PY) -m parity_tests.bench

clean:
	rm -rf $(VENV) build *.egg-info demo_out
