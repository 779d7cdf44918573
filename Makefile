# Two front doors: `make run` and `make test`. Both bootstrap .venv from a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
NODES ?= 5
SIM_SEEDS ?= 500

# System packages some tests need (real etcd for differential tests, chromium for the
# dashboard test, nftables for the network-namespace partition test). Installed with apt-get
# when missing; where that is impossible the tests that need them skip with a message.
SYS_PKGS := etcd-server etcd-client chromium nftables iproute2

.PHONY: run test venv test-venv lint typecheck sim clean sysdeps

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp pyproject.toml
	$(VPY) -m pip install --quiet -e '.[test,bench]'
	touch $@

venv: $(VENV)/.stamp
test-venv: $(VENV)/.stamp-test

run: $(VENV)/.stamp
	$(VPY) -m launcher --nodes $(NODES)

lint: $(VENV)/.stamp-test
	$(VPY) -m ruff check udpraft launcher tools tests loadtest
	$(VPY) -m mypy

typecheck: lint

sysdeps:
	@missing=""; for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing system packages:$$missing"; \
	  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/tmp/udpraft-apt.log 2>&1; then \
	    echo "WARNING: could not install$$missing (see /tmp/udpraft-apt.log); tests needing them will skip"; fi; \
	else echo "WARNING: missing$$missing and no root apt-get; tests needing them will skip"; fi

test: $(VENV)/.stamp-test sysdeps
	$(VPY) -m ruff check udpraft launcher tools tests loadtest
	$(VPY) -m mypy
	UDPRAFT_SIM_SEEDS=$(SIM_SEEDS) $(VPY) -m pytest -q -n 2 tests

sim: $(VENV)/.stamp
	$(VPY) -m tools.sim --seeds 1..$(SIM_SEEDS) --nodes 5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
