"""Adapter: assign items (or forecasting windows) to shards (checkpoint tensor_plan)."""

from dlworkflow.logs import rule_logging
from dlworkflow.tensors import make_plan

with rule_logging(snakemake.log[0]):
    make_plan(snakemake.params.dataset, snakemake.params.tensors, snakemake.params.split,
              snakemake.params.seed, snakemake.input.splits, snakemake.output.plan)
