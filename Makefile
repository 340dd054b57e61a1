# Everything runs from a local virtualenv that these targets create and keep up to date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install test test-faults test-schedules-live test-wheel test-unit lint format run bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

## Run the whole test suite (uses DATABASE_URL/REDIS_URL, else local services, else embedded ones),
## a test file at a time in each of TEST_WORKERS pytest-xdist workers (workers after the first get
## an embedded Redis of their own: the suites pick fixed numbered databases).
TEST_WORKERS ?= 2
test: $(INSTALLED)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## The fault-injection suite: kills and restarts real processes and private servers (~7 min; the
## 6-minute PostgreSQL outage, the other scenarios, and the schedules' minutes-long runs with
## two beats and a killed scheduler each in a pytest-xdist worker of its own).
test-faults: $(INSTALLED)
	$(BIN)/python -m pytest -m faults tests/faults -n 3 --dist loadgroup $(PYTEST_ARGS)

## Schedules with real processes for minutes: two API processes and two schedulers, one killed
## twice, live PUT, pause, delete, trigger and end_at (~2 min; run it on an idle machine).
test-schedules-live: $(INSTALLED)
	$(BIN)/python -m pytest -m live tests/live $(PYTEST_ARGS)

## The package as a user gets it: sdist and wheel built, the wheel installed alone into a fresh
## virtualenv outside the checkout, every command and one timer end to end run from there.
test-wheel: $(INSTALLED)
	$(BIN)/python -m pytest -m wheel tests/wheel $(PYTEST_ARGS)

## Only the fast tests that need no service.
test-unit: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check timers tests bench examples celeryconfig.py
	$(BIN)/ruff format --check timers tests bench examples celeryconfig.py
	$(BIN)/mypy timers bench tests

format: $(INSTALLED)
	$(BIN)/ruff check --fix timers tests bench examples celeryconfig.py
	$(BIN)/ruff format timers tests bench examples celeryconfig.py

## The whole stack on this machine (embedded PostgreSQL and Redis unless configured).
run: $(INSTALLED)
	$(BIN)/timers dev

## The benchmark: celery-eta vs seed vs timers on this machine (~12 min); raw numbers in bench/results.
bench: $(INSTALLED)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
