# CloudWindow: one file for set-up, run, lint, typecheck and test (CI runs `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps web run serve migrate demo lint typecheck imports test test-py test-web bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The browser client (Vue 3 + Element Plus), built into web_client/dist, which the server serves (no CDN).
WEB := web_client
WEB_STAMP := $(WEB)/node_modules/.installed
WEB_SOURCES := $(shell find $(WEB)/src $(WEB)/index.html $(WEB)/vite.config.ts -type f 2>/dev/null)

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

$(WEB)/dist/index.html: $(WEB_STAMP) $(WEB_SOURCES)
	cd $(WEB) && npx vite build --logLevel warn

web: $(WEB)/dist/index.html

migrate: setup
	$(BIN)/cloudwindow db upgrade

demo: migrate
	$(BIN)/cloudwindow demo load

# Everything a newcomer needs: install, migrate, load the demo district, serve on 127.0.0.1:8080.
run: demo web
	$(BIN)/cloudwindow serve

serve: setup web
	$(BIN)/cloudwindow serve

lint: setup
	$(BIN)/ruff check server signalling recordings tests bench
	$(BIN)/ruff format --check server signalling recordings tests bench

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

# Debian packages the tests drive for real: coturn for TURN, Chromium (and a CJK font for its screenshots) for the
# browser tests, redis-server for the Redis-restart test (which starts and kills one of its own). Installed when we
# may; the tests fail in CI without them.
SYSTEM_PACKAGES := coturn chromium fonts-wqy-zenhei redis-server
system-deps:
	@if ! command -v turnserver >/dev/null || ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null || ! fc-list 2>/dev/null | grep -qi wqy; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q $(SYSTEM_PACKAGES) || (apt-get update -q && apt-get install -y -q $(SYSTEM_PACKAGES))) >/dev/null; \
	  else echo "install: $(SYSTEM_PACKAGES) (apt-get install $(SYSTEM_PACKAGES)); the TURN tests skip without coturn locally, the browser tests fail without Chromium"; fi; \
	fi

test-py: setup system-deps
	$(BIN)/pytest -q

# Browser client: type check (vue-tsc), unit tests (Vitest), then the Playwright flows in Debian's Chromium against a
# server the test starts inside a network namespace of its own (needs root for `ip netns`, as CI has).
test-web: setup system-deps web
	cd $(WEB) && npx vue-tsc --noEmit
	cd $(WEB) && npx vitest run
	cd $(WEB) && npx playwright test

# The whole suite: linters, types, import rules, Python tests, browser tests.
test: lint typecheck imports test-py test-web

bench: setup
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(WEB)/node_modules $(WEB)/dist $(WEB)/test-results
