"""Adapter: score the final model once on the test rows (rule final_test)."""

from dlworkflow.context import RunContext
from dlworkflow.final import score_test
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    score_test(RunContext.from_snakemake(snakemake))
