# The two commands of the README. Both create .venv and install what they need (idempotent:
# the install step reruns only when setup.cfg or pyproject.toml change). The grep hides pip's notes
# about this machine's local package folders; pipefail keeps pip's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 (the local CPU wheel) is pinned in setup.cfg; numpy<2 in every pip command
# (nuscenes-devkit 1.2.0 needs it; without the pin pip backtracks into builds that fail).
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --no-input -q
PYTEST_ARGS ?=

.PHONY: test demo install clean-venv

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "installing into $(VENV) (about a minute on a fresh machine)"
	$(PIP_INSTALL) -e ".[test,ros,trt-tools]" "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m perception.demo

clean-venv:
	rm -rf $(VENV)
