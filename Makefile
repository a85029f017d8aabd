# Set-up and the two everyday jobs. `make demo` and `make test` each set up what they need first.
# On a machine with a GPU, install the PyTorch build for your CUDA first (https://pytorch.org), then
# `make setup TORCH_CONSTRAINTS=` so pip keeps that build.

PYTHON ?= python3
VENV ?= .venv
TORCH_CONSTRAINTS ?= -c constraints-cpu.txt
BIN := $(VENV)/bin
EXAMPLES := vgtool/assets/examples

.PHONY: setup demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_CONSTRAINTS) -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The bundled default model (vgtool/assets/models/default) on the bundled example images.
demo: setup
	$(BIN)/vgtool ground $(EXAMPLES) --phrases-file $(EXAMPLES)/phrases.txt --out runs/demo --overwrite

test: setup
	$(BIN)/ruff check vgtool tests
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check vgtool tests
	$(BIN)/ruff format --check vgtool tests

clean:
	rm -rf runs .pytest_cache .ruff_cache
