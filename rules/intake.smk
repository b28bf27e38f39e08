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
    threads: 4
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=get_dataset,
        intake=PARAMS["intake"],
        raw_fingerprint=get_raw_fingerprint,
    script:
        "../scripts/intake.py"
