# Step 3: stateless preprocessing into fixed-shape shards. The plan is a checkpoint: the
# number of shards depends on the data, and each shard is one job (never recomputed once
# written). Only trainval shards are requested here; test shards belong to the final step.


checkpoint tensor_plan:
    input:
        splits="results/{dataset}/split/splits.parquet",
        metric="results/{dataset}/intake/metric.json",
    output:
        plan="results/{dataset}/tensors/plan.parquet",
    log:
        "logs/{dataset}/tensor_plan.log",
    benchmark:
        "benchmarks/{dataset}/tensor_plan.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dataset=get_dataset,
        tensors=get_tensor_settings,
        split=get_split_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/tensor_plan.py"


rule tensorize_shard:
    input:
        plan="results/{dataset}/tensors/plan.parquet",
        inventory="results/{dataset}/intake/inventory.parquet",
        metric="results/{dataset}/intake/metric.json",
        raw=get_raw_root,
    output:
        shard="results/{dataset}/tensors/{shard}.npz",
    log:
        "logs/{dataset}/tensorize_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/tensorize_{shard}.tsv"
    wildcard_constraints:
        shard=r"trainval-\d{5}",
    priority: PREPARE_PRIORITY
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


rule tensors_index:
    input:
        plan="results/{dataset}/tensors/plan.parquet",
        shards=get_trainval_shards,
    output:
        index="results/{dataset}/tensors/index.parquet",
        stats="results/{dataset}/tensors/stats.json",
    log:
        "logs/{dataset}/tensors_index.log",
    benchmark:
        "benchmarks/{dataset}/tensors_index.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/tensors_index.py"
