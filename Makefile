# modelops-flows — two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install install-production browser demo demo-stop test test-postgres test-production bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,gcs]"
	@touch $(STAMP)

install: $(STAMP)

# The production topology's load balancer and Redis (Debian packages); PostgreSQL is the machine's.
install-production: $(STAMP)
	@{ command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy redis-server >/dev/null; }
	@{ command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null 2>&1 || { echo "install-production: haproxy could not be installed" >&2; exit 1; }

# Debian's Chromium for the browser test and the demo's screenshots (Playwright drives it; its own
# browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "browser: chromium could not be installed" >&2; exit 1; }

demo: $(STAMP)
	@if [ "$(TOPOLOGY)" = production ]; then $(MAKE) --no-print-directory install-production; fi
	@if [ -n "$(SCREENSHOTS)" ]; then $(MAKE) --no-print-directory browser; fi
	KEEP=$(KEEP) TOPOLOGY=$(TOPOLOGY) SCREENSHOTS=$(SCREENSHOTS) $(PY) -m deployments.demo

demo-stop: $(STAMP)
	$(PY) -m deployments.demo stop

test: $(STAMP) browser
	@$(PY) -m pytest -q --ignore=tests/production $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - that is a failure here" >&2; fi; \
	exit $$rc

# The end-to-end tests again, against a Prefect server on PostgreSQL (a fresh database on
# $(PGURL), dropped afterwards). Fails when PostgreSQL cannot be reached: nothing is skipped.
PGURL ?= postgresql://postgres@127.0.0.1:5432/postgres
PG_TESTS := tests/test_e2e.py tests/test_scenario.py tests/test_retrain.py
test-postgres: $(STAMP)
	@db=modelops_test_$$$$; \
	psql "$(PGURL)" -q -c "CREATE DATABASE $$db" || exit 1; \
	MODELOPS_TEST_DATABASE_URL="postgresql+asyncpg://$${PGURL_USERHOST:-postgres@127.0.0.1:5432}/$$db" \
	  $(PY) -m pytest -q $(PYTEST_ARGS) $(PG_TESTS); rc=$$?; \
	psql "$(PGURL)" -q -c "DROP DATABASE IF EXISTS $$db WITH (FORCE)"; \
	if [ $$rc -eq 5 ]; then echo "make test-postgres: pytest collected no tests - that is a failure here" >&2; fi; \
	exit $$rc

# The production topology (deployments.production) run and faulted: PostgreSQL (the machine's, a fresh
# database), Redis and HAProxy started by the tests themselves; fails when any cannot be had.
test-production: install-production
	@$(PY) -m pytest -q $(PYTEST_ARGS) tests/production; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-production: pytest collected no tests - that is a failure here" >&2; fi; \
	exit $$rc

bench: $(STAMP)
	$(PY) bench/latency.py

clean:
	rm -rf .demo .modelops .pytest_cache
