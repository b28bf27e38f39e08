"""Adapter: time the final model on raw inputs (rule final_latency)."""

import os

from dlworkflow.latency import measure_latency
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    measure_latency(snakemake.params.dataset, os.path.dirname(str(snakemake.input.model)),
                    snakemake.input.inventory, os.path.dirname(str(snakemake.input.index)),
                    snakemake.output.latency, seed=snakemake.params.seed,
                    samples=int(snakemake.params.final["latency_items"]),
                    threads=snakemake.threads)
