# Step 3b: feature pre-extraction with a frozen pretrained base, once per trainval shard.
# Runs only for datasets the configured features.extractor embeds (workflow.extracts_features:
# under `auto`, the image sets train.architecture may train with image_transfer).


# The base, its weights and side, decided once for every shard. Under `auto` this is where
# auto's image network is decided (rule choose_network takes it), so a download here, once,
# or weights that turn up halfway cannot give shards, folds and the final model different
# backbones; where auto trains from scratch, the shards hold no embeddings and it says why.
rule choose_extractor:
    input:
        stats="results/{dataset}/tensors/stats.json",
        named=get_named_features_files,
    output:
        choice="results/{dataset}/features/extractor.json",
    log:
        "logs/{dataset}/choose_extractor.log",
    benchmark:
        "benchmarks/{dataset}/choose_extractor.tsv"
    priority: PREPARE_PRIORITY
    localrule: True
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dataset=get_dataset,
        features=PARAMS["features"],
        train=get_transfer_settings,
    script:
        "../scripts/choose_extractor.py"


rule extract_features:
    input:
        shard="results/{dataset}/tensors/{shard}.npz",
        choice="results/{dataset}/features/extractor.json",
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
