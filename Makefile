# Two front doors: `make run` and `make test`. Both bootstrap .venv from a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
NODES ?= 5
SIM_SEEDS ?= 500

.PHONY: run test venv test-venv lint typecheck sim clean

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp pyproject.toml
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.stamp
test-venv: $(VENV)/.stamp-test

run: $(VENV)/.stamp
	$(VPY) -m launcher --nodes $(NODES)

lint: $(VENV)/.stamp-test
	$(VPY) -m ruff check udpraft launcher tools tests loadtest
	$(VPY) -m mypy

typecheck: lint

test: $(VENV)/.stamp-test
	$(VPY) -m ruff check udpraft launcher tools tests loadtest
	$(VPY) -m mypy
	UDPRAFT_SIM_SEEDS=$(SIM_SEEDS) $(VPY) -m pytest -q -n 2 tests

sim: $(VENV)/.stamp
	$(VPY) -m tools.sim --seeds 1..$(SIM_SEEDS) --nodes 5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
