"""Adapter: write one shard of tensors (rule tensorize_shard)."""

from dlworkflow.logs import rule_logging
from dlworkflow.tensors import write_shard

with rule_logging(snakemake.log[0]):
    write_shard(snakemake.params.dataset, snakemake.params.tensors, snakemake.params.split,
                snakemake.input.plan, snakemake.input.inventory, snakemake.wildcards.shard,
                snakemake.output.shard)
