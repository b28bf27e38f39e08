"""Adapter: index the trainval shards and record tensor statistics (rule tensors_index)."""

from dlworkflow.logs import rule_logging
from dlworkflow.tensors import write_index

with rule_logging(snakemake.log[0]):
    write_index(snakemake.input.plan, list(snakemake.input.shards), snakemake.output.index,
                snakemake.output.stats)
