# Two commands: `make run` serves the project, `make test` runs every test. Both create .venv.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DJANGO_SETTINGS_MODULE ?= project.settings

.PHONY: run test lint install install-test migrate soak bench bench-writes clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

# The app (editable) plus what the demo project itself needs (project/requirements.txt).
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml project/requirements.txt
	$(VENV)/bin/pip install -q -e . -r project/requirements.txt
	touch $@

# tests/settings.py builds on project.settings, so the test install includes the demo's packages.
$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml project/requirements.txt
	$(VENV)/bin/pip install -q -e ".[test]" -r project/requirements.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py migrate --noinput
	@DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py welcome --url http://$(HOST):$(PORT)/
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(PY) manage.py runserver $(HOST):$(PORT)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Branch coverage of notifications/ with a floor (COV_FLOOR): set from what the suite reaches.
COV_FLOOR ?= 90
test: install-test lint
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m pytest --cov=notifications --cov-branch \
	  --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_FLOOR) $(PYTEST_ARGS)

# Soak (docs/operations.md): writers + reconnecting readers against real daphne for SOAK_SECONDS
# (120); SOAK_ARGS=--pg-redis for PostgreSQL + Redis + two daphnes; SOAK_FULL=1 adds the
# 1,000-stream x 1,000-notification burst and 10,000 connect/disconnect cycles.
soak: install-test
	$(PY) -m soak.run $(SOAK_ARGS)
	@if [ "$(SOAK_FULL)" = "1" ]; then \
	  NOTIFICATIONS_BURST_STREAMS=1000 NOTIFICATIONS_BURST_NOTIFICATIONS=1000 NOTIFICATIONS_MEMORY_CYCLES=10000 \
	  DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m pytest -s -q -p no:cacheprovider \
	  tests/integration/test_guarantees.py -k "burst or cycles"; fi

# Benchmarks (docs/benchmarks.md): raw ASGI loop, this product and django-eventstream side by side
# on 127.0.0.1. Quick profile (N=1,000) by default; BENCH_PROFILE=full for N=1,000/5,000/10,000.
# Benchmark-only packages live in bench/.venv, never in .venv.
bench/.venv/.installed: bench/requirements.txt project/requirements.txt pyproject.toml
	test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/pip install -q --upgrade pip
	bench/.venv/bin/pip install -q -e . -r project/requirements.txt -r bench/requirements.txt
	touch $@

bench: bench/.venv/.installed
	ulimit -n $$(ulimit -Hn); bench/.venv/bin/python -m bench.run

# The write side (docs/benchmarks.md, "Writes"): notify()/s from 1, 4 and 8 writer processes on a
# throwaway PostgreSQL, with and without the ordering mechanism (same run), then a bulk send of
# 10,000 personal notices to 10,000 open streams; prints the issue's table. Runs from .venv
# (it starts servers with the test support code). BENCH_WRITES_ARGS adds options, e.g.
# "--before main" (the same cells for an older tree), "--hub-cost 2000" (CPU per event a hub
# does not deliver, 4 daphnes on Redis), "--profile 1500", "--spy bench/.venv/bin/py-spy".
bench-writes: install-test
	ulimit -n $$(ulimit -Hn); $(PY) -m bench.writes $(BENCH_WRITES_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
