# Set-up and the two everyday jobs. `make demo` and `make test` each set up what they need first.
# On a machine with a GPU, install the PyTorch build for your CUDA first (https://pytorch.org), then
# `make setup TORCH_CONSTRAINTS=` so pip keeps that build.

PYTHON ?= python3
VENV ?= .venv
TORCH_CONSTRAINTS ?= -c constraints-cpu.txt
BIN := $(VENV)/bin
EXAMPLES := vgtool/assets/examples
# The annotation libraries the export tests read exports with (datumaro, supervision, label-studio-sdk)
# pin numpy, pillow and pyarrow below the project's, so they live in a venv of their own.
INTEROP_VENV ?= .venv-interop

.PHONY: setup interop demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_CONSTRAINTS) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

$(INTEROP_VENV)/.installed: requirements-interop.txt
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install --quiet --upgrade pip
	$(INTEROP_VENV)/bin/pip install --quiet -r requirements-interop.txt
	touch $@

interop: $(INTEROP_VENV)/.installed

# The bundled default model (vgtool/assets/models/default) on the bundled example images.
demo: setup
	$(BIN)/vgtool ground $(EXAMPLES) --phrases-file $(EXAMPLES)/phrases.txt --out runs/demo --overwrite

test: setup interop
	$(BIN)/ruff check vgtool tests
	VGTOOL_INTEROP_PYTHON=$(CURDIR)/$(INTEROP_VENV)/bin/python VGTOOL_REQUIRE_INTEROP=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check vgtool tests
	$(BIN)/ruff format --check vgtool tests

clean:
	rm -rf runs .pytest_cache .ruff_cache
