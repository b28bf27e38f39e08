"""Adapter: write one shard of tensors (rules tensorize_shard and tensorize_test_shard)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.tensors import write_shard

with rule_logging(snakemake.log[0]):
    write_shard(RunContext.from_snakemake(snakemake), snakemake.wildcards.shard)
