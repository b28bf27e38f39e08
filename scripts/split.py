"""Adapter: split one dataset into test and CV folds (rule split)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.splits import split_dataset

with rule_logging(snakemake.log[0]):
    split_dataset(RunContext.from_snakemake(snakemake))
