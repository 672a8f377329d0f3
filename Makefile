# CloudWindow: one file for set-up, run, lint, typecheck and test (CI runs `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run serve migrate demo lint typecheck imports test test-py bench clean

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

test-py: setup
	$(BIN)/pytest -q

# The whole suite: linters, types, import rules, tests.
test: lint typecheck imports test-py

bench: setup
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
