# The few commands people use. Everything installs itself on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test,bench]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check rules tests bench
	$(VENV)/bin/ruff format --check rules tests bench
	$(VENV)/bin/mypy rules

test: lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/calendar.py
	$(PY) bench/clocks.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
