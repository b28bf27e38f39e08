"""Adapter: fit and score every traditional baseline on one fold (rule baseline_fold)."""

import os

from dlworkflow.baselines import run_baseline_fold
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    features = snakemake.input.features
    run_baseline_fold(snakemake.params.dataset, snakemake.params.baseline,
                      snakemake.params.tensors, snakemake.input.metric,
                      str(snakemake.input.index).rsplit("/", 1)[0], int(snakemake.wildcards.fold),
                      snakemake.params.seed, int(snakemake.params.split["gap"]),
                      snakemake.output.metrics, snakemake.output.predictions,
                      features_dir=os.path.dirname(str(features)) if features else None)
