# Quick start: `make demo` (render the built-in sample in Paddle), `make serve` (the local web app on
# http://127.0.0.1:7860) and `make test` (install + full suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo serve bench clean

# (Re)create the venv and install the project whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,onnx]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -ra parity_tests

demo: $(STAMP)
	$(PY) -m conr_paddle demo

serve: $(STAMP)
	$(PY) -m conr_web

bench: $(STAMP)
	$(PY) -m parity_tests.bench

clean:
	rm -rf $(VENV) build *.egg-info demo_out
