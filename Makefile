# CloudWindow: one file for set-up, run, lint, typecheck and test (CI runs `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run serve migrate demo lint typecheck imports test test-py bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

migrate: setup
	$(BIN)/cloudwindow db upgrade

demo: migrate
	$(BIN)/cloudwindow demo load

# Everything a newcomer needs: install, migrate, load the demo district, serve on 127.0.0.1:8080.
run: demo
	$(BIN)/cloudwindow serve

serve: setup
	$(BIN)/cloudwindow serve

lint: setup
	$(BIN)/ruff check server signalling recordings tests bench
	$(BIN)/ruff format --check server signalling recordings tests bench

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

# Debian packages the tests drive for real (coturn for TURN). Installed when we may; tests fail in CI without them.
SYSTEM_PACKAGES := coturn
system-deps:
	@if ! command -v turnserver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q $(SYSTEM_PACKAGES) || (apt-get update -q && apt-get install -y -q $(SYSTEM_PACKAGES))) >/dev/null; \
	  else echo "install: $(SYSTEM_PACKAGES) (apt-get install $(SYSTEM_PACKAGES)); their tests are skipped without them"; fi; \
	fi

test-py: setup system-deps
	$(BIN)/pytest -q

# The whole suite: linters, types, import rules, tests.
test: lint typecheck imports test-py

bench: setup
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
