# The two set-up commands of the README: `make serve` and `make test`.
# Each creates .venv and installs llmlb with everything it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test bench-cli

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/llmlb node serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)
