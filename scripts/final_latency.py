"""Adapter: time the final model on raw inputs (rule final_latency)."""

from dlworkflow.context import RunContext
from dlworkflow.latency import measure_latency
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    measure_latency(RunContext.from_snakemake(snakemake))
