# Two commands for a new user: `make run` and `make test`. Both install into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8000
SIZE ?= small
# Tests run in parallel processes (one per core); each test file stays on one process (module fixtures).
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: install run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU wheel first: any other torch spec pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Migrates and serves web + worker at once; on the first start the worker builds the embedded world (cached in the
# data dir), its progress in the terminal and on the admin dashboard.
run: $(STAMP)
	RLHF_DATA_DIR=$(DATA_DIR) $(BIN)/rlhf demo --size $(SIZE) --host $(HOST) --port $(PORT)

# ruff (lint and format) and the import contracts (pyproject.toml) run before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
