"""Adapter: gather the network folds, compare with the baseline (rule nn_summary)."""

from dlworkflow.evaluate import network_summary
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    network_summary(snakemake.input.metric,
                    [*snakemake.input.metrics, *snakemake.input.beside_metrics],
                    [*snakemake.input.predictions, *snakemake.input.beside_predictions],
                    snakemake.input.baseline, snakemake.output.oof, snakemake.output.summary,
                    snakemake.input.get("network") or None)
