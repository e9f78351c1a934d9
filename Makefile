# The few commands people use. Everything installs itself on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup test lint bench run clean

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	scripts/system-deps.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test,bench]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check rules monitor connectors tests bench
	$(VENV)/bin/ruff format --check rules monitor connectors tests bench
	$(VENV)/bin/mypy rules monitor connectors

test: lint
	$(VENV)/bin/pytest

run: setup
	$(VENV)/bin/slamon run --demo

bench: setup
	$(PY) bench/calendar.py
	$(PY) bench/clocks.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
