"""Adapter: write one embedded demo dataset (rule demo_data)."""

from dlworkflow.demo import prepare_demo
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    prepare_demo(snakemake.params.source, snakemake.output[0], snakemake.params.demo,
                 seed=snakemake.params.seed)
