"""Adapter: write the final report (rule final_report)."""

from dlworkflow.context import RunContext
from dlworkflow.logs import rule_logging
from dlworkflow.report import write_report

with rule_logging(snakemake.log[0]):
    write_report(RunContext.from_snakemake(snakemake))
