# warrantysync: `make run` starts the demo server, `make test` runs everything CI runs.
#
# Everything Python lives in $(VENV). Stamp files under $(VENV) record what pip
# installed, so pip runs again only when pyproject.toml changes or the venv is new.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: run test check axe lint-fix clean bench fuzz faults

## run: install, migrate, load demo data (only into an empty database), serve
run: $(INSTALLED)
	$(BIN)/warrantysync db upgrade
	$(BIN)/warrantysync demo
	$(BIN)/warrantysync serve --host $(HOST) --port $(PORT)

## test: everything CI runs; as root also apt-installs the servers the tests start
test: check
	bash scripts/install-test-system-deps.sh
	$(MAKE) --no-print-directory axe
	node --test tests/js/
	$(BIN)/pytest

## axe: axe-core for the accessibility tests, into tests/js/node_modules (ignored; no lock file)
AXE := tests/js/node_modules/axe-core/axe.min.js
axe: $(AXE)
$(AXE):
	npm install --prefix tests/js --no-package-lock --no-save --no-audit --no-fund --silent axe-core@4

## check: lint, format check and type check only
check: $(INSTALLED_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## lint-fix: format and apply safe lint fixes
lint-fix: $(INSTALLED_TEST)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: warrantysync beside its peers (docs/performance.md); QUICK=1 for a ~3-minute run.
## Bench-only tools go into $(VENV) and bench/peers/node, never into the package.
BENCH_PY := python-socketio sse-starlette matplotlib py-spy
bench: $(INSTALLED_TEST)
	$(BIN)/python -m pip install --disable-pip-version-check -q $(BENCH_PY)
	cd bench/peers/node && npm install --no-package-lock --no-audit --no-fund --silent
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,)

## fuzz: the long fuzzing pass (schemathesis + hypothesis; `make test` runs a short one)
fuzz: $(INSTALLED_TEST)
	WARRANTYSYNC_FUZZ_SCALE=long $(BIN)/pytest tests/security/test_security_fuzz.py

## faults: the long fault suite (10,000-cycle soak, minutes of injected faults)
faults: $(INSTALLED_TEST)
	bash scripts/install-test-system-deps.sh
	WARRANTYSYNC_FAULT_SCALE=long $(BIN)/pytest -s tests/faults

## clean: remove build output and tool caches (keeps $(VENV) and any database)
clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e .
	touch $@

# The test extra includes the package itself, so it satisfies $(INSTALLED) too.
$(INSTALLED_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED) $@
