"""Adapter: score the final model once on the test rows (rule final_test)."""

import os

from dlworkflow.final import score_test
from dlworkflow.logs import rule_logging

with rule_logging(snakemake.log[0]):
    score_test(snakemake.params.dataset, snakemake.params.final, snakemake.input.metric,
               os.path.dirname(str(snakemake.input.model)), snakemake.input.plan,
               list(snakemake.input.test_shards), os.path.dirname(str(snakemake.input.index)),
               snakemake.input.baseline, snakemake.params.baseline, snakemake.params.tensors,
               snakemake.params.seed, snakemake.output.metrics, snakemake.output.predictions,
               with_baseline=snakemake.params.with_baseline)
