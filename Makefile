# Two commands do all set-up on a fresh machine:
#   make run    create .venv, install astray, run the quickstart sweep on the embedded digits data
#   make test   create .venv, install astray with test extras, run the whole test suite
# make test-fast runs tests/unit only (no Ray, no process groups; about 30 s).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup run test test-fast benchmark clean

setup: $(VENV)/.installed-dev

# make run installs only what the quickstart needs; the dev extras (trackers, test tools)
# are for make test.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m astray.tune configs/quickstart.yaml --set sweep.name=quickstart-$(STAMP)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest tests/unit

benchmark: $(VENV)/.installed
	$(PY) benchmarks/step_cost.py
	$(PY) benchmarks/quickstart_tradeoff.py
	$(PY) benchmarks/sweep_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
