# Step 4: the validation/testing scheme: role (trainval | test), CV folds, leakage checks.


rule split:
    input:
        inventory="results/{dataset}/intake/inventory.parquet",
    output:
        splits="results/{dataset}/split/splits.parquet",
        leakage=report(
            "results/{dataset}/split/leakage.json",
            caption="../report/leakage.rst",
            category="4 validation scheme",
            labels={"dataset": "{dataset}", "file": "leakage check"},
        ),
    log:
        "logs/{dataset}/split.log",
    benchmark:
        "benchmarks/{dataset}/split.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        dataset=get_dataset,
        split=get_split_settings,
        seed=PARAMS["seed"],
        sample=PARAMS["intake"]["sample"],
    script:
        "../scripts/split.py"
