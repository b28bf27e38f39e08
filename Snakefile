# dlworkflow: the table of contents. Read rules/common.smk next, then one rules/<step>.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/intake.smk"
include: "rules/split.smk"
include: "rules/eda.smk"
include: "rules/tensors.smk"
include: "rules/features.smk"
include: "rules/baseline.smk"
include: "rules/train.smk"
include: "rules/final.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
