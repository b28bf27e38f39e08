"""Adapter: embed one shard with the frozen pretrained base (rule extract_features)."""

from dlworkflow.logs import rule_logging
from dlworkflow.models.extractors import extract_shard

with rule_logging(snakemake.log[0]):
    settings = snakemake.params.features
    extract_shard(snakemake.input.shard, settings["extractor"], settings["weights"],
                  settings["batch_size"], snakemake.output.features, side=settings["side"])
