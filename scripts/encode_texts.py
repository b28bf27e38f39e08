"""Adapter: the trainval texts' sentence vectors, each encoded once (rule encode_texts)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.train import encode_trainval

with rule_logging(snakemake.log[0]):
    encode_trainval(RunContext.from_snakemake(snakemake), snakemake.output.vectors)
