"""Adapter: render the EDA report of one dataset (rule eda)."""

from dlworkflow.eda import write_eda
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    write_eda(snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.params.intake,
              snakemake.params.seed, snakemake.input, snakemake.output)
