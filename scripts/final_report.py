"""Adapter: write the final report (rule final_report)."""

from dlworkflow.logs import rule_logging
from dlworkflow.report import write_report

with rule_logging(snakemake.log[0]):
    write_report(snakemake.wildcards.dataset, snakemake.params.dataset,
                 dict(snakemake.input.items()), snakemake.params.final, snakemake.output.report)
