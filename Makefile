# One-command set-up and runs. `make demo` / `make test` create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow lint bench clean

setup: $(STAMP)

# torch first: 2.13.0 is a CPU build; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,bench,sb3]'
	touch $(STAMP)

demo: setup
	$(BIN)/mgrpo demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q --runslow

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
