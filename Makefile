# modelops-flows — two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo demo-stop test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	KEEP=$(KEEP) $(PY) -m deployments.demo

demo-stop: $(STAMP)
	$(PY) -m deployments.demo stop

test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests - that is a failure here" >&2; fi; \
	exit $$rc

bench: $(STAMP)
	$(PY) bench/latency.py

clean:
	rm -rf .demo .modelops .pytest_cache
