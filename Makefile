# Two commands are the whole set-up: `make run` (the stack with demo data) and `make test`.
# Both create .venv and install the package; servers are private unless DATABASE_URL and
# REDIS_URL are set (see README.md).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m mescache.devstack run $(if $(DEMO),--demo,)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

test: lint typecheck
	$(BIN)/pytest

# Needs wrk for the API side (apt-get install wrk); results go in BENCHMARKS.md by hand.
bench: $(STAMP)
	$(BIN)/python -m bench.api_bench
	$(BIN)/python -m bench.listener_bench
	$(BIN)/python -m bench.gap_checker

clean:
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis
