# Step 3b: feature pre-extraction with a frozen pretrained base, once per trainval shard.
# Runs only for datasets whose modality the configured features.extractor supports.


rule extract_features:
    input:
        shard="results/{dataset}/tensors/{shard}.npz",
        named=get_named_features_files,
    output:
        features="results/{dataset}/features/{shard}.npz",
    log:
        "logs/{dataset}/extract_features_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/extract_features_{shard}.tsv"
    wildcard_constraints:
        shard=r"trainval-\d{5}",
    priority: PREPARE_PRIORITY
    threads: NETWORK_THREADS
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPU_SLOT,
    params:
        features=PARAMS["features"],
    script:
        "../scripts/extract_features.py"


rule features_index:
    input:
        index="results/{dataset}/tensors/index.parquet",
        features=get_trainval_features,
    output:
        index="results/{dataset}/features/index.parquet",
    log:
        "logs/{dataset}/features_index.log",
    benchmark:
        "benchmarks/{dataset}/features_index.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/features_index.py"
