"""Adapter: fit and score every traditional baseline on one fold (rule baseline_fold)."""

from dlworkflow.baselines import run_baseline_fold
from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    run_baseline_fold(RunContext.from_snakemake(snakemake), int(snakemake.wildcards.fold))
