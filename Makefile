# The README's two commands: `make figures` and `make test`. Both set up .venv first, from the lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Every package's exact version (a pip freeze); `make setup` installs these, `make lock` refreshes them.
LOCK   := requirements/lock.txt
LOCK_VENV := build/lock-venv
# `make ci-cuda`: the same lock in its own venv, with PyPI's CUDA build of the pinned torch.
CUDA_VENV := .venv-cuda
# Install from another index (a mirror, a PyTorch CUDA-flavour index); default: pip's own.
CUDA_INDEX_URL ?=
# `keep`: use your pip configuration as it is; default: ignore pip's config files and PIP_* wheel
# sources, which on a CPU machine may point at local CPU wheels of the same torch version.
CUDA_PIP_CONFIG ?= ignore

.PHONY: figures test setup lock clean-figures ci-cuda

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $@

# Refresh the lock: resolve pyproject.toml afresh (newest releases, no lock) in a scratch venv and
# freeze it. Local version tags are dropped (torch==X, not X+cpu), so a CUDA box still gets PyPI's
# CUDA build of the same version. Commit the new lock once `make test` passes with it.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[test]'
	$(LOCK_VENV)/bin/python -m pip freeze --all --exclude mielib --exclude setuptools --exclude wheel > $(LOCK_VENV)/freeze.txt
	mkdir -p $(dir $(LOCK))
	$(LOCK_VENV)/bin/python -c 'import platform as p; print("# Exact versions for `make setup` (pip install -c $(LOCK) -e .[test]) and environment.yml.\n" \
	  "# Written by `make lock` from pyproject.toml on Python", p.python_version(), f"({p.system()} {p.machine()}); no hand edits.")' > $(LOCK).new
	sed -E 's/^([^=]+==[^+]+)\+.*$$/\1/' $(LOCK_VENV)/freeze.txt >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

# Regenerate every figure and table with papermill on the simulated lab (preset small).
figures: setup
	$(PY) -m mielib notebooks --preset small

# Unit tests, a smoke-preset papermill run of every notebook, and the real-browser test.
test: setup
	bash tests/browser_setup.sh
	$(PY) -m pytest

# CUDA CI (README "CUDA"): on a machine with an NVIDIA GPU, install the lock into $(CUDA_VENV) with a
# CUDA build of torch, run the tests with the CUDA tests required (they fail rather than skip), then
# every notebook in the smoke preset on the GPU, one line each with its wall time. Without a GPU
# the first line stops with a message (exit 3). `python -m mielib cuda-ci --help` explains each step.
ci-cuda:
	$(PYTHON) -m mielib cuda-ci check
	$(PYTHON) -m mielib cuda-ci install --venv $(CUDA_VENV) --lock $(LOCK) \
	  $(if $(CUDA_INDEX_URL),--index-url $(CUDA_INDEX_URL)) $(if $(filter keep,$(CUDA_PIP_CONFIG)),--keep-pip-config)
	$(CUDA_VENV)/bin/python -m mielib cuda-ci run
