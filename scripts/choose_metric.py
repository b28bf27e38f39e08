"""Adapter: choose the metric of one dataset (rule choose_metric)."""

from dlworkflow.choice import write_metric_choice
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    write_metric_choice(snakemake.params.task, snakemake.input.inventory, snakemake.params.intake,
                        snakemake.output.metric, snakemake.wildcards.dataset,
                        snakemake.input.rejected)
