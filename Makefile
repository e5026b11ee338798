# Two commands on a fresh clone: `make run` and `make test`. Both create or
# refresh the virtualenv in .venv from pyproject.toml; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install browser run worker test lint format clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the browser tests: Debian's chromium and chromium-driver
# (a test tool's own browser download does not work offline). Installed when
# missing and we may (root with apt); otherwise browser tests skip outside CI.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium is not installed: browser tests will be skipped (and fail in CI)"; fi; \
	fi

# Embedded defaults: SQLite in .run/, tasks in-process, console email, demo data.
run: install
	DJANGO_DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=1 $(BIN)/python manage.py seed_demo
	@echo "Opt-Out Registry on http://$(HOST):$(PORT)/"
	DJANGO_DEBUG=1 $(BIN)/python manage.py runserver --noreload $(HOST):$(PORT)

worker: install
	$(BIN)/celery -A config worker --loglevel=INFO --concurrency=2

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Index benchmarks at the sizes of docs/performance.md (long: see there);
# BENCH_ARGS="--sizes phash:1000000 --queries 10000" runs a smaller one.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_index.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy registry optout config

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .run staticfiles .pytest_cache .mypy_cache .ruff_cache
