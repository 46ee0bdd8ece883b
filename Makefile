# The README's two commands: `make figures` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: figures test setup clean-figures

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Regenerate every figure and table with papermill on the simulated lab (preset small).
figures: setup
	$(PY) -m mielib notebooks --preset small

# Unit tests, a smoke-preset papermill run of every notebook, and the real-browser test.
test: setup
	bash tests/browser_setup.sh
	$(PY) -m pytest
