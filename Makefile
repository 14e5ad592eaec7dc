# advnb — two commands for a fresh machine:
#   make test               install everything into .venv and run the test suite (what CI runs)
#   make run [SCALE=quick]  install, then render every notebook to reports/<SCALE>/ with papermill
PYTHON ?= python3
VENV   ?= .venv
SCALE  ?= quick
JOBS   ?= 1
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.advnb-installed

.PHONY: install test lint run smoke export clean-nbs sync-check bench bench-train gpu-check peers mutate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'torchattacks>=3.5'  # AutoAttack's components; see `peers` for why --no-deps
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

## the test suite: notebooks and package in sync, notebooks clean, lint, unit tests, every notebook at smoke scale
test: install
	$(BIN)/python tools/check_sync.py
	$(BIN)/ruff check --no-cache nbs advnb tests tools
	$(BIN)/python -m pytest

## the main job: every notebook through papermill at $(SCALE), rendered to reports/$(SCALE)/
run: install
	$(BIN)/advnb run --scale $(SCALE) --jobs $(JOBS)

smoke:
	$(MAKE) run SCALE=smoke

## developer helpers
export: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

lint: install
	$(BIN)/ruff check --no-cache nbs advnb tests tools

sync-check: install
	$(BIN)/python tools/check_sync.py

## the attack peers for tests/test_attack_peers.py and the benchmark. torchattacks 3.5.1 pins requests~=2.25.1,
## which conflicts with jupyterlab's requests; it needs only torch and scipy at run time, so `install` installs it
## without its pins (AutoAttack is built on its components); foolbox comes with the `peers` extra.
peers: install
	$(BIN)/python -m pip install --quiet -e '.[test,peers]'
	$(BIN)/python -m pytest -m peers tests/test_attack_peers.py

bench: install
	$(BIN)/python tools/bench_attacks.py

## advnb.train's images per second against a minimal hand-written loop (CE and PGD-AT); target ratio <= 1.05
bench-train: install
	$(BIN)/python tools/bench_train.py

## on a machine with CUDA: the paper-scale dry run on the GPU (bf16), the plan, the CUDA tests, both benchmarks (gpu-check/)
gpu-check: install
	bash tools/gpu_check.sh

## plant hand-written one-line bugs one at a time and print the kill rate per module (minutes; not part of `make test`)
mutate: install
	$(BIN)/python tools/mutate.py
