# The two set-up commands of the README: `make serve` and `make test`.
# Each creates .venv and installs llmlb with everything it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test check browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/llmlb node serve

# The dashboard's browser test drives Debian's Chromium (Playwright's own download cannot work
# offline); installing it needs root, as on CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

# Lint, format and types: the same checks CI runs before the tests.
check: install
	$(VENV)/bin/ruff check llmlb tests bench migrations
	$(VENV)/bin/ruff format --check llmlb tests bench migrations
	$(VENV)/bin/mypy

test: install browser check
	$(PY) -m pytest $(PYTEST_ARGS)
