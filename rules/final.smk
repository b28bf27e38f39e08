# Step 7: the only rules that read test rows. The final network is retrained on every
# trainval row (final_train sees no test row), then final_test scores it once; latency and
# the report (which plots and explains the scored test predictions) follow. Test shards are
# written under final/, next to what reads them.


rule tensorize_test_shard:
    input:
        plan="results/{dataset}/tensors/plan.parquet",
        inventory="results/{dataset}/intake/inventory.parquet",
        metric="results/{dataset}/intake/metric.json",
        raw=get_raw_root,
    output:
        shard="results/{dataset}/final/tensors/{shard}.npz",
    log:
        "logs/{dataset}/tensorize_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/tensorize_{shard}.tsv"
    wildcard_constraints:
        shard=r"test-\d{5}",
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        dataset=get_dataset,
        tensors=get_tensor_settings,
        split=get_split_settings,
    script:
        "../scripts/tensorize_shard.py"


rule final_train:
    input:
        index="results/{dataset}/tensors/index.parquet",
        stats="results/{dataset}/tensors/stats.json",
        shards=get_trainval_shards,
        metric="results/{dataset}/intake/metric.json",
        summary="results/{dataset}/nn/summary.json",
        oof="results/{dataset}/nn/oof.parquet",
        histories=get_nn_fold_histories,
        fold_models=get_nn_fold_models,
        beside_histories=get_beside_fold_histories,
        beside_models=get_beside_fold_models,
        features=get_features_index_if_extracted,
        vectors=get_text_vectors_if_encoded,
        network=get_network_if_decided,
        baseline="results/{dataset}/baseline/summary.json",
        named=get_named_train_files,
    output:
        model="results/{dataset}/final/model.keras",
        card="results/{dataset}/final/model.json",
        history="results/{dataset}/final/history.csv",
        shipped="results/{dataset}/final/shipped.json",
    log:
        "logs/{dataset}/final_train.log",
    benchmark:
        "benchmarks/{dataset}/final_train.tsv"
    priority: FINAL_PRIORITY
    threads: NETWORK_THREADS
    resources:
        mem_mb=8000,
        runtime=360,
        gpu=GPU_SLOT,
    params:
        dataset=get_dataset,
        train=get_train_settings,
        augment=get_augment_settings,
        final=get_final_settings,
        tensors=get_tensor_settings,
        split=get_split_settings,
        seed=PARAMS["seed"],
        features=get_features_settings,
        with_baseline=get_final_scores_baseline,
    script:
        "../scripts/final_train.py"


rule final_baseline:
    input:
        index="results/{dataset}/tensors/index.parquet",
        shards=get_trainval_shards,
        metric="results/{dataset}/intake/metric.json",
        summary="results/{dataset}/baseline/summary.json",
        oof="results/{dataset}/baseline/oof.parquet",
        features=get_features_index_if_extracted,
        named=get_named_features_files,
    output:
        model="results/{dataset}/final/baseline.skops",
        card="results/{dataset}/final/baseline.json",
    log:
        "logs/{dataset}/final_baseline.log",
    benchmark:
        "benchmarks/{dataset}/final_baseline.tsv"
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=get_dataset,
        baseline=get_baseline_settings,
        tensors=get_tensor_settings,
        final=get_final_settings,
        seed=PARAMS["seed"],
        features=get_features_settings,
    script:
        "../scripts/final_baseline.py"


rule final_test:
    input:
        model="results/{dataset}/final/model.keras",
        card="results/{dataset}/final/model.json",
        shipped="results/{dataset}/final/shipped.json",
        baseline_model=get_final_baseline_export,
        metric="results/{dataset}/intake/metric.json",
        plan="results/{dataset}/tensors/plan.parquet",
        test_shards=get_test_shards,
        index="results/{dataset}/tensors/index.parquet",
        trainval_shards=get_trainval_shards,
    output:
        metrics=report(
            "results/{dataset}/final/test_metrics.json",
            caption="../report/test.rst",
            category="7 final",
            labels={"dataset": "{dataset}", "file": "test metrics"},
        ),
        predictions="results/{dataset}/final/predictions.parquet",
        plots=directory("results/{dataset}/final/plots"),
        explanations="results/{dataset}/final/explanations.json",
    log:
        "logs/{dataset}/final_test.log",
    benchmark:
        "benchmarks/{dataset}/final_test.tsv"
    priority: FINAL_PRIORITY
    threads: NETWORK_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        dataset=get_dataset,
        final=get_final_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/final_test.py"


rule final_latency:
    input:
        model="results/{dataset}/final/model.keras",
        card="results/{dataset}/final/model.json",
        shipped="results/{dataset}/final/shipped.json",
        baseline_model=get_final_baseline_export,
        inventory="results/{dataset}/intake/inventory.parquet",
        index="results/{dataset}/tensors/index.parquet",
        raw=get_raw_root,
    output:
        latency=report(
            "results/{dataset}/final/latency.json",
            caption="../report/latency.rst",
            category="7 final",
            labels={"dataset": "{dataset}", "file": "latency"},
        ),
    log:
        "logs/{dataset}/final_latency.log",
    benchmark:
        "benchmarks/{dataset}/final_latency.tsv"
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dataset=get_dataset,
        final=get_final_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/final_latency.py"


rule final_report:
    input:
        metric="results/{dataset}/intake/metric.json",
        counts="results/{dataset}/intake/counts.json",
        leakage="results/{dataset}/split/leakage.json",
        inventory="results/{dataset}/intake/inventory.parquet",
        baseline="results/{dataset}/baseline/summary.json",
        network="results/{dataset}/nn/summary.json",
        histories=get_nn_fold_histories,
        beside_histories=get_beside_fold_histories,
        final_history="results/{dataset}/final/history.csv",
        card="results/{dataset}/final/model.json",
        shipped="results/{dataset}/final/shipped.json",
        baseline_model=get_final_baseline_export,
        test="results/{dataset}/final/test_metrics.json",
        predictions="results/{dataset}/final/predictions.parquet",
        explanations="results/{dataset}/final/explanations.json",
        latency="results/{dataset}/final/latency.json",
        plan="results/{dataset}/tensors/plan.parquet",
        test_shards=get_test_shards,
        raw=get_raw_root,
    output:
        headline="results/{dataset}/final/headline.json",
        report=report(
            "results/{dataset}/final/report.html",
            caption="../report/final.rst",
            category="7 final",
            labels={"dataset": "{dataset}", "file": "final report"},
        ),
    log:
        "logs/{dataset}/final_report.log",
    benchmark:
        "benchmarks/{dataset}/final_report.tsv"
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        dataset=get_dataset,
        final=get_final_settings,
    script:
        "../scripts/final_report.py"
