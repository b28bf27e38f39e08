# Step 1a: inventory every raw item; quarantine bad ones in rejected.csv with the reason.
# One job per dataset that probes items in batches across its threads (no job per file).


rule intake:
    input:
        get_raw_root,
    output:
        inventory="results/{dataset}/intake/inventory.parquet",
        rejected="results/{dataset}/intake/rejected.csv",
        counts="results/{dataset}/intake/counts.json",
    log:
        "logs/{dataset}/intake.log",
    benchmark:
        "benchmarks/{dataset}/intake.tsv"
    priority: PREPARE_PRIORITY
    threads: INTAKE_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=get_dataset,
        intake=get_intake_settings,
        raw_fingerprint=get_raw_fingerprint,
    script:
        "../scripts/intake.py"


rule choose_metric:
    input:
        inventory="results/{dataset}/intake/inventory.parquet",
        rejected="results/{dataset}/intake/rejected.csv",
    output:
        metric="results/{dataset}/intake/metric.json",
    log:
        "logs/{dataset}/choose_metric.log",
    benchmark:
        "benchmarks/{dataset}/choose_metric.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        task=get_task,
        intake=get_intake_settings,
    script:
        "../scripts/choose_metric.py"
