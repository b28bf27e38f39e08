"""Adapter: refit the CV-best baseline on every trainval row and export it (rule final_baseline)."""

from dlworkflow.context import RunContext
from dlworkflow.final import export_baseline
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    export_baseline(RunContext.from_snakemake(snakemake))
