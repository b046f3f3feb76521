# Every target runs inside the project's virtual environment, .venv, which
# `make setup` (scripts/setup.sh) creates from $(PYTHON) and keeps up to date.
#   make test PYTHON=/usr/bin/python3.12   # build .venv from another Python (>= 3.10)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench docs-config

setup:
	@PYTHON="$(PYTHON)" VENV="$(VENV)" bash scripts/setup.sh

demo: setup
	$(PY) -m meshlib demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks

docs-config: setup
	$(PY) -m meshlib config-docs > docs/configuration.md
