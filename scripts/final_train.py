"""Adapter: retrain the network on every trainval row (rule final_train)."""

from dlworkflow.context import RunContext
from dlworkflow.final import train_final
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    train_final(RunContext.from_snakemake(snakemake))
