# Two commands from a fresh checkout: `make demo` and `make test`.
# Each creates .venv and installs the pinned project first (once).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/trc demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m bench.run --json bench/results/latest.json
	$(BIN)/python -m bench.integrations --json bench/results/integrations.json
	$(BIN)/python -m bench.bridge --json bench/results/bridge.json
	$(BIN)/python -m bench.trace --json bench/results/trace.json
	$(BIN)/python -m bench.broker --json bench/results/broker.json

clean:
	rm -rf $(VENV) test-artifacts .trc-data
