"""Adapter: index the embedding files of one dataset (rule features_index)."""

from dlworkflow.logs import rule_logging
from dlworkflow.models.extractors import write_features_index

with rule_logging(snakemake.log[0]):
    write_features_index(snakemake.input.index, list(snakemake.input.features),
                         snakemake.output.index)
