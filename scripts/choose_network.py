"""Adapter: the network `auto` takes, decided once for the dataset (rule choose_network)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.train import choose_network

with rule_logging(snakemake.log[0]):
    choose_network(RunContext.from_snakemake(snakemake), snakemake.output.network)
