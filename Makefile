# The two commands of the README: `make demo` (main job) and `make test` (tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the venv's tools (snakemake, dvc, dlworkflow) come first for every recipe
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lock demo quick test lint dvc-yaml bench clean

install: $(STAMP)

# requirements.lock pins the versions CI installs and the benchmarks measured with, for the
# platform its first line names; on another, pip resolves pyproject.toml's ranges
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]" $$($(BIN)/python tools/lock.py pip-args)
	touch $(STAMP)

## lock: pin this venv's versions in requirements.lock (after a change to pyproject.toml)
lock: $(STAMP)
	$(BIN)/python tools/lock.py write

## demo: prepare the four embedded demo datasets, run the workflow on them, summarise the
## results and record them in dvc.lock (dlworkflow run)
demo: $(STAMP)
	dlworkflow run

## quick: the quick look, a smoke test of the whole path in minutes (dlworkflow run --quick
## writes 20 items a class and short training into params.yaml first)
quick: $(STAMP)
	dlworkflow run --quick

## test: linters plus the whole test suite (what CI runs), one worker per core; tests that
## share the demo run (and the SLURM ones) stay on one worker, so do tests that share a
## module fixture; the longest start first (tests/conftest.py)
test: $(STAMP) lint
	pytest -n auto --dist loadgroup

lint: $(STAMP)
	ruff check src scripts tests bench tools
	snakefmt --check Snakefile rules
	dlworkflow dvc-yaml --check
	dlworkflow params-doc --check

dvc-yaml: $(STAMP)
	dlworkflow dvc-yaml
	dlworkflow params-doc

bench: $(STAMP)
	python bench/intake.py

clean:
	rm -rf results logs benchmarks .snakemake
