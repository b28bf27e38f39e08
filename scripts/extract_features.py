"""Adapter: embed one shard with the frozen pretrained base (rule extract_features)."""

from pathlib import Path

from dlworkflow.logs import rule_logging
from dlworkflow.models.extractors import extract_shard, extractor_choice

with rule_logging(snakemake.log[0]):
    choice = extractor_choice(Path(snakemake.input.choice).parent)
    extract_shard(snakemake.input.shard, choice["extractor"], choice["weights"],
                  choice["batch_size"], snakemake.output.features, side=choice["side"],
                  key=choice["weights_key"])
