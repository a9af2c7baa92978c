# Two commands on a fresh machine: `make test` and `make report`. Both build .venv first.
DEFAULT_TORCH := 2.13.0
TORCH ?= $(DEFAULT_TORCH)
PYTHON ?= python3
VENV ?= $(if $(filter $(DEFAULT_TORCH),$(TORCH)),.venv,.venv-torch$(TORCH))
PY := $(VENV)/bin/python
JOBS ?= 2
STAMP := $(VENV)/.grl-installed-torch-$(TORCH)

# Published GRL packages as rows (impls/peer_*.py; docs/peers.md). --no-deps: their declared
# dependencies pull torchvision and another torch; PEER_DEPS is what their GRL imports need.
PEERS := torch-gradient-reversal==1.0.0 pytorch-revgrad==0.2.0 pytorch-adapt==0.0.83 dalib==0.2
# torchmetrics, lightning-utilities (pytorch-adapt's hooks) and qpsolvers (dalib.adaptation): what
# the reversal probe's examples of their DANN setups import (docs/probe.md).
PEER_DEPS := pytorch-metric-learning==1.6.3 torchmetrics==1.9.0 lightning-utilities==0.15.3
PEER_LIGHT := scipy tqdm qpsolvers

.PHONY: setup peers plot test report gate sweep train-plot clean history probe-examples readme
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "torch==$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,onnx]"
	$(PY) -m pip install --quiet --no-deps $(PEERS) $(PEER_DEPS)
	$(PY) -m pip install --quiet $(PEER_LIGHT)
	rm -f $(VENV)/.grl-installed-torch-*
	touch $@

# (Re)install the published packages alone, into an existing venv: make peers [VENV=...]
peers:
	$(PY) -m pip install --quiet --no-deps $(PEERS) $(PEER_DEPS)
	$(PY) -m pip install --quiet $(PEER_LIGHT)

# The whole suite: self-tests (exit code) plus the matrix (written to reports/).
test: setup
	$(PY) -m ruff check harness impls tests conftest.py docs/examples
	$(PY) -m pytest -n $(JOBS)

# The optional plotting extra (matplotlib) for the PNGs; everything runs without it.
plot: setup
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e ".[plot]" \
		|| echo "matplotlib not installed: no PNGs"

# The matrix alone: printed, and written to reports/ as Markdown and JSON; then the DANN picture.
report: setup plot
	$(PY) -m pytest -n $(JOBS) harness/conformance
	$(MAKE) --no-print-directory train-plot
	$(if $(filter $(DEFAULT_TORCH),$(TORCH)),$(MAKE) --no-print-directory readme)

# Every generated block of README.md from the committed reports (self-tests keep each equal to
# them): the advice and latency tables, the torch history's figures and the upgrade example,
# whose diff is also committed as text. No matrix run: seconds.
UPGRADE_OLD ?= 2.14.1
UPGRADE_NEW ?= 2.15.0
UPGRADE_DIFF = reports/diff-$(UPGRADE_OLD)-to-$(UPGRADE_NEW)-cpu.txt
readme: setup
	$(PY) -m grl_conformance.cli advise reports/compat-$(DEFAULT_TORCH)-cpu.json --readme README.md --latency reports/latency-$(DEFAULT_TORCH)-cpu.json
	$(PY) -m grl_conformance.cli history reports/history --readme README.md
	$(PY) -m grl_conformance.cli diff reports/history/compat-$(UPGRADE_OLD)-cpu.json reports/history/compat-$(UPGRADE_NEW)-cpu.json \
	  --readme README.md > $(UPGRADE_DIFF).tmp && mv $(UPGRADE_DIFF).tmp $(UPGRADE_DIFF)

# The reversal probe on the published packages' DANN setups (docs/examples/), eager and compiled:
# reports/probe/ (each probe's Markdown and JSON, and an index). About a minute and a half.
probe-examples: setup
	$(PY) docs/examples/run_probes.py

# The torch-upgrade gate for a candidate torch (docs/gate.md): a venv for that torch, the
# matrix run against the expectations for it (or the newest older torch), then the diff.
# make gate TORCH=2.15.0   pytest's status: 0 ok, 1 a regression, 6 NOT HELD (a column the
# harness could not judge there). make itself can only exit 0 or 2, so the last line prints
# pytest's status and $(GATE_DIR)/exit-status holds it; make exits 0 exactly when it is 0.
# GATE_BASELINE=FILE holds the candidate to another torch's expectations (release day: the new
# torch against the last one's, `make gate TORCH=2.15.0 GATE_BASELINE=reports/baselines/torch-2.14.json`).
GATE_DIR = reports/gate-$(TORCH)
GATE_BASELINE ?=
gate: setup
	@base="$(GATE_BASELINE)"; [ -n "$$base" ] || base=$$($(PY) -c "from grl_conformance.results.compare import pick_baseline; import torch; \
	p = pick_baseline('reports/baselines', torch.__version__); print(p or '')"); \
	if [ -z "$$base" ]; then echo "no expectations file in reports/baselines for torch $(TORCH) or older:" \
	  "create one on the current torch with: pytest harness/conformance --grl-update-baseline" >&2; exit 2; fi; \
	echo "gate: torch $(TORCH) against $$base"; rm -rf $(GATE_DIR); \
	$(PY) -m pytest -n $(JOBS) harness/conformance --grl-baseline "$$base" --grl-report-dir $(GATE_DIR); \
	status=$$?; \
	$(PY) -m grl_conformance.cli diff "$$base" $(GATE_DIR)/latest.json; \
	echo $$status > $(GATE_DIR)/exit-status; \
	echo "gate exit status (pytest's): $$status"; \
	exit $$status

# Release day, as users get torch: the newest torch the package index serves and the README's
# top torch (TOP_TORCH), each pip's default wheel (the CUDA build on Linux, also without a
# GPU) in a fresh venv, deleted afterwards. Each runs the witness row with every column's control
# against that torch's expectations (or the newest older): it fails (exit 6, NOT HELD) when a
# control cannot pass there, and (exit 1) when the witness, a correct GRL, gets a red cell.
# CI runs it with the machine's torch cap lifted (.ci/run). docs/gate.md, "Release day".
TOP_TORCH := 2.15.0
RELEASE_VENV := .venv-release
RELEASE_TORCH ?= $(sort $(TOP_TORCH) $(shell $(PYTHON) -m pip index versions torch 2>/dev/null \
	| sed -n 's/^torch (\(.*\))$$/\1/p'))
.PHONY: release
release:
	@test -n "$(RELEASE_TORCH)" || { echo "release: no torch version found" >&2; exit 2; }
	@for v in $(RELEASE_TORCH); do \
	  echo "release leg: torch $$v as pip installs it by default"; rm -rf $(RELEASE_VENV); \
	  $(MAKE) --no-print-directory setup TORCH=$$v VENV=$(RELEASE_VENV) || exit 2; \
	  $(RELEASE_VENV)/bin/python -m pytest -n $(JOBS) -q -p no:cacheprovider harness/conformance \
	    --grl-only witness --grl-baseline auto --grl-no-report; \
	  status=$$?; rm -rf $(RELEASE_VENV); \
	  if [ $$status -ne 0 ]; then echo "release leg on torch $$v: exit status $$status"; exit $$status; fi; \
	done

# Latency and memory sweep (not part of `make test`): reports/latency-<torch>-<device>.md/json/png.
# Extra options: make sweep SWEEP_ARGS="--quick" (see docs/sweep.md). The PNG needs the plot extra.
SWEEP_ARGS ?=
sweep: setup plot
	$(PY) -m grl_conformance.cli sweep $(SWEEP_ARGS)

clean:
	rm -rf .venv .venv-torch* build *.egg-info

# The train area's picture (matplotlib optional: without it, a message and no picture).
train-plot: setup
	$(PY) -m grl_conformance.bench.train_plot -o reports/dann-moons.png

# The GPU run in one go, offline, in 8 minutes (docs/gpu.md): make gpu-report OUT=DIR
# [PYTHON=python3] [GPU_REPORT_ARGS=--dry-run]. Uses the given Python as it is (no venv).
GPU_REPORT_ARGS ?=
.PHONY: gpu-report
gpu-report:
	@test -n "$(OUT)" || { echo "usage: make gpu-report OUT=DIR [PYTHON=...] [GPU_REPORT_ARGS=--dry-run]" >&2; exit 2; }
	$(PYTHON) -m grl_conformance.bench.gpu_report "$(OUT)" $(GPU_REPORT_ARGS)

# The torch history: one venv per torch minor (latest patch pip offers), the whole matrix with the
# published packages, its report in reports/history/ and its expectations file in
# reports/baselines/; each venv is deleted after its run (the pip cache stays). Then the history
# report. Minutes and several GB per torch: `make history HISTORY_TORCH="2.6.0 2.14.1"` for some.
HISTORY_TORCH ?= 2.9.1 2.10.0 2.11.0 2.12.1 2.13.0 2.14.1 2.15.0
HISTORY_VENV := .venv-history
history: setup
	@mkdir -p reports/history
	@for v in $(HISTORY_TORCH); do \
	  start=$$(date +%s); \
	  rm -rf $(HISTORY_VENV); \
	  $(MAKE) --no-print-directory setup TORCH=$$v VENV=$(HISTORY_VENV) || exit 1; \
	  installed=$$(date +%s); \
	  $(HISTORY_VENV)/bin/python -m pytest -n $(JOBS) -q -p no:cacheprovider harness/conformance \
	    --grl-report-dir reports/history --grl-update-baseline --grl-expectations reports/history/no-pins \
	    > reports/history/.run-$$v.log 2>&1; \
	  end=$$(date +%s); \
	  echo "$$v install_s=$$((installed - start)) matrix_s=$$((end - installed))" >> reports/history/wall-times.txt; \
	  tail -n 3 reports/history/.run-$$v.log; rm -rf $(HISTORY_VENV) reports/history/.run-$$v.log; \
	done
	@rm -f reports/history/latest.json
	$(PY) -m grl_conformance.cli history reports/history --out reports/history/README.md --readme README.md

