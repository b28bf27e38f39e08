"""Adapter: retrain the network on every trainval row (rule final_train)."""

import os

from dlworkflow.final import train_final
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    features = snakemake.input.features
    train_final(snakemake.params.dataset, snakemake.params.train, snakemake.params.augment,
                snakemake.params.final, snakemake.input.metric,
                os.path.dirname(str(snakemake.input.index)), snakemake.input.summary,
                snakemake.input.oof, list(snakemake.input.histories), snakemake.params.seed,
                int(snakemake.params.split["gap"]), snakemake.threads,
                os.path.dirname(str(snakemake.output.model)), stats_path=snakemake.input.stats,
                tensor_settings=snakemake.params.tensors,
                features_dir=os.path.dirname(str(features)) if features else None,
                features=snakemake.params.features)
