"""Adapter: render the EDA report of one dataset (rule eda)."""

from dlworkflow.context import RunContext
from dlworkflow.eda import write_eda
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    write_eda(RunContext.from_snakemake(snakemake))
