"""Adapter: gather the baseline folds into oof.parquet and summary.json (rule baseline_summary)."""

from dlworkflow.evaluate import fold_outputs_to_summary
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    fold_outputs_to_summary("baseline", snakemake.input.metric, snakemake.input.metrics,
                            snakemake.input.predictions, snakemake.output.oof,
                            snakemake.output.summary)
