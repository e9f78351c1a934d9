# The few commands people use. Each installs what it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup system-deps test lint bench run clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test,bench]'
	touch $@

setup: $(VENV)/.installed

# Prometheus (promtool), Alertmanager, PostgreSQL and Chromium, which the tests run for real
system-deps:
	scripts/system-deps.sh

run: setup
	$(VENV)/bin/slamon run --demo

lint: setup
	$(VENV)/bin/ruff check rules monitor connectors tests bench
	$(VENV)/bin/ruff format --check rules monitor connectors tests bench
	$(VENV)/bin/mypy rules monitor connectors

test: system-deps lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/calendar.py
	$(PY) bench/clocks.py
	$(PY) bench/ingest.py
	$(PY) bench/breach_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
