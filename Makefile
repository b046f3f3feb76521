PYTHON ?= python3

.PHONY: setup demo test bench docs-config

setup:
	@bash scripts/setup.sh

demo: setup
	$(PYTHON) -m meshlib demo

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) -m benchmarks

docs-config:
	$(PYTHON) -m meshlib config-docs > docs/configuration.md
