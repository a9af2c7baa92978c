# Two commands on a fresh machine: `make test` and `make report`. Both build .venv first.
DEFAULT_TORCH := 2.13.0
TORCH ?= $(DEFAULT_TORCH)
PYTHON ?= python3
VENV ?= $(if $(filter $(DEFAULT_TORCH),$(TORCH)),.venv,.venv-torch$(TORCH))
PY := $(VENV)/bin/python
JOBS ?= 2
STAMP := $(VENV)/.grl-installed-torch-$(TORCH)

.PHONY: setup test report clean train-plot
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "torch==$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.grl-installed-torch-*
	touch $@

# The whole suite: self-tests (exit code) plus the matrix (written to reports/).
test: setup
	$(PY) -m pytest -n $(JOBS)

# The matrix alone: printed, and written to reports/ as Markdown and JSON.
report: setup
	$(PY) -m pytest -n $(JOBS) tests/conformance

clean:
	rm -rf .venv .venv-torch* build *.egg-info

# The train area's picture (matplotlib optional: without it, a message and no picture).
train-plot: setup
	$(PY) -m harness.train_plot -o reports/dann-moons.png
