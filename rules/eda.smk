# Step 1b: the EDA report, after the split so it can show the scheme and its leakage check.


rule eda:
    input:
        inventory="results/{dataset}/intake/inventory.parquet",
        rejected="results/{dataset}/intake/rejected.csv",
        counts="results/{dataset}/intake/counts.json",
        metric="results/{dataset}/intake/metric.json",
        splits="results/{dataset}/split/splits.parquet",
        leakage="results/{dataset}/split/leakage.json",
    output:
        html=report(
            "results/{dataset}/intake/eda.html",
            caption="../report/eda.rst",
            category="1 data and metric",
            labels={"dataset": "{dataset}", "file": "EDA report"},
        ),
        summary="results/{dataset}/intake/summary.json",
    log:
        "logs/{dataset}/eda.log",
    benchmark:
        "benchmarks/{dataset}/eda.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        dataset=get_dataset,
        intake=PARAMS["intake"],
        seed=PARAMS["seed"],
    script:
        "../scripts/eda.py"
