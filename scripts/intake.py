"""Adapter: intake one dataset (rule intake)."""

from dlworkflow.intake import intake_dataset
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    intake_dataset(snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.params.intake,
                   outputs=snakemake.output, workers=snakemake.threads)
