"""Adapter: assign items (or forecasting windows) to shards (checkpoint tensor_plan)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.tensors import make_plan

with rule_logging(snakemake.log[0]):
    make_plan(RunContext.from_snakemake(snakemake))
