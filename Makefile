# The two commands of the README. Both create .venv and install what they need (idempotent:
# the install step reruns only when setup.cfg or pyproject.toml change). The grep hides pip's notes
# about this machine's local package folders; pipefail keeps pip's exit status.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch==2.13.0 (the local CPU wheel) is pinned in setup.cfg's [train] extra (the base install is the torch-free
# runtime, docs/deploy.md); numpy<2 in every pip command
# (nuscenes-devkit 1.2.0 needs it; without the pin pip backtracks into builds that fail).
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --no-input -q
PYTEST_ARGS ?=

.PHONY: test demo install clean-venv test-mmdet3d install-mmdet3d

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "installing into $(VENV) (about a minute on a fresh machine)"
	$(PIP_INSTALL) -e ".[train,test,ros,trt-tools]" "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -ra --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m perception.demo

clean-venv:
	rm -rf $(VENV)

# Optional OpenMMLab integration (perception/integrations/mmdet3d) in its own venv, never a pip extra:
# mmcv must be compiled against the installed torch (--no-build-isolation; an isolated build would pull
# a CUDA torch), and mmdet 3.3 / mmdet3d 1.4 refuse mmcv 2.2, so the pins are exact. Order matters:
# torch first, then this project (so `perception` imports there), then setuptools<81 (mmcv 2.1's setup.py
# imports pkg_resources) and ninja (parallel compile, MAX_JOBS=2), then mmcv, then mmdet/mmdet3d.
# The mmcv compile takes about 11 minutes on two free cores; pip's wheel cache makes a rebuild quick.
MM_VENV := .venv-mmdet3d
MM_BIN := $(MM_VENV)/bin
MM_STAMP := $(MM_VENV)/.installed
MM_PIP := $(MM_BIN)/python -m pip install --disable-pip-version-check --no-input -q
MM_TESTS ?= tests/perception/integrations

install-mmdet3d: $(MM_STAMP)

$(MM_BIN)/python:
	$(PYTHON) -m venv $(MM_VENV)

$(MM_STAMP): setup.cfg pyproject.toml | $(MM_BIN)/python
	@echo "installing into $(MM_VENV) (compiles mmcv: about 12 minutes on a fresh machine)"
	$(MM_PIP) torch==2.13.0 "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(MM_PIP) -e ".[train,test]" "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(MM_PIP) "setuptools<81" ninja "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	MAX_JOBS=2 $(MM_PIP) --no-build-isolation mmcv==2.1.0 "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(MM_PIP) mmdet==3.3.0 mmdet3d==1.4.0 "numpy<2" 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(MM_BIN)/python -c "import torch, mmcv, mmdet, mmdet3d; print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmdet3d', mmdet3d.__version__)"
	touch $@

test-mmdet3d: $(MM_STAMP)
	$(MM_BIN)/python -m pytest -ra --durations=15 $(MM_TESTS) $(PYTEST_ARGS)
