# Entry points: `make app` (install + start the app), `make test` (install + run all tests) and
# `make test-fast` (unit tests only: the inner loop).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test test-fast bench-browser install clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(PY) app.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m unit tests

# app timings over a 50,000-row store: STORE=<a real results store> (default $$SEGUNC_TEST_STORE)
bench-browser: $(STAMP)
	$(PY) benchmarks/browser_perf.py $(if $(STORE),--store $(STORE))

clean:
	rm -rf $(VENV)
