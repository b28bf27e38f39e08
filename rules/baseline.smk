# Step 2: traditional baselines on flat vectors, one job per fold, then the CV summary.
# Reads trainval shards only (fold-train rows to fit, the fold's validation rows to score).


rule baseline_fold:
    input:
        index="results/{dataset}/tensors/index.parquet",
        shards=get_trainval_shards,
        metric="results/{dataset}/intake/metric.json",
        features=get_features_index_if_extracted,
    output:
        metrics="results/{dataset}/baseline/fold-{fold}/metrics.json",
        predictions="results/{dataset}/baseline/fold-{fold}/predictions.parquet",
    log:
        "logs/{dataset}/baseline_fold-{fold}.log",
    benchmark:
        "benchmarks/{dataset}/baseline_fold-{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    priority: get_fold_priority
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=get_dataset,
        baseline=get_baseline_settings,
        tensors=get_tensor_settings,
        split=get_split_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/baseline_fold.py"


rule baseline_summary:
    input:
        metric="results/{dataset}/intake/metric.json",
        metrics=get_baseline_fold_metrics,
        predictions=get_baseline_fold_predictions,
    output:
        oof="results/{dataset}/baseline/oof.parquet",
        headline="results/{dataset}/baseline/headline.json",
        summary=report(
            "results/{dataset}/baseline/summary.json",
            caption="../report/cv.rst",
            category="2 traditional baseline",
            labels={"dataset": "{dataset}", "file": "CV summary"},
        ),
    log:
        "logs/{dataset}/baseline_summary.log",
    benchmark:
        "benchmarks/{dataset}/baseline_summary.tsv"
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/baseline_summary.py"
