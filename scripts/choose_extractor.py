"""Adapter: the base the features step embeds with, decided once (rule choose_extractor)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.train import choose_extractor

with rule_logging(snakemake.log[0]):
    choose_extractor(RunContext.from_snakemake(snakemake), snakemake.output.choice)
