"""Adapter: train and validate the network on one fold (rule train_fold)."""

import os

from dlworkflow.logs import rule_logging
from dlworkflow.train import train_fold

with rule_logging(snakemake.log[0]):
    features = snakemake.input.features
    train_fold(snakemake.params.dataset, snakemake.params.train, snakemake.params.augment,
               snakemake.input.metric, str(snakemake.input.index).rsplit("/", 1)[0],
               int(snakemake.wildcards.fold), snakemake.params.seed,
               int(snakemake.params.split["gap"]), snakemake.threads, snakemake.params.out_dir,
               stats_path=snakemake.input.stats, tensor_settings=snakemake.params.tensors,
               features_dir=os.path.dirname(str(features)) if features else None,
               features=snakemake.params.features)
