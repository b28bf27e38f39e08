"""Adapter: split one dataset into test and CV folds (rule split)."""

from dlworkflow.logs import rule_logging
from dlworkflow.splits import split_dataset

with rule_logging(snakemake.log[0]):
    split_dataset(snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.params.settings,
                  snakemake.params.seed, snakemake.params.sample, snakemake.input.inventory,
                  snakemake.output)
