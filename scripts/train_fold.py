"""Adapter: train and validate the network on one fold (rule train_fold)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.train import train_fold

with rule_logging(snakemake.log[0]):
    train_fold(RunContext.from_snakemake(snakemake), int(snakemake.wildcards.fold))
