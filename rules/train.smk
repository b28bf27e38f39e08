# Step 5: the network baseline, one job per fold, then the CV summary compared with the
# traditional baseline. With a GPU a fold asks for a gpu slot (`--resources gpu=1` runs
# them one at a time) and two threads; on a CPU one thread and no slot (common.smk).


# Where `train.architecture: auto` takes a pretrained network when its weights are at hand
# (images, texts), the choice is made here, once, for every fold and the final model: a
# first use downloads the weights here (not in folds side by side), and weights that turn
# up or a download that fails halfway through a run cannot give the folds different networks.
# It runs where Snakemake runs (a cluster's submit host, which reaches the internet where
# compute nodes often do not). A checkpoint: where its decision lists networks to weigh
# against its choice (images: the network from scratch beside a transfer network, the fitted
# variant beside either on pictures of 64 px or more), the folds train them all.
checkpoint choose_network:
    input:
        stats="results/{dataset}/tensors/stats.json",
        extractor=get_extractor_choice_if_auto,
        named=get_named_train_files,
    output:
        network="results/{dataset}/nn/network.json",
    log:
        "logs/{dataset}/choose_network.log",
    benchmark:
        "benchmarks/{dataset}/choose_network.tsv"
    priority: PREPARE_PRIORITY
    localrule: True
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dataset=get_dataset,
        train=get_train_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/choose_network.py"


# A network on a frozen pretrained sentence encoder (text_transfer) reads the trainval
# texts' vectors from here, each encoded once, instead of encoding them in every fold; where
# `auto` chose another network (no encoder at hand) the file holds none and says why.
rule encode_texts:
    input:
        index="results/{dataset}/tensors/index.parquet",
        shards=get_trainval_shards,
        network=get_network_if_decided,
        named=get_named_train_files,
    output:
        vectors="results/{dataset}/nn/vectors.npz",
    log:
        "logs/{dataset}/encode_texts.log",
    benchmark:
        "benchmarks/{dataset}/encode_texts.tsv"
    priority: PREPARE_PRIORITY
    threads: NETWORK_THREADS
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU_SLOT,
    params:
        dataset=get_dataset,
        train=get_train_settings,
        seed=PARAMS["seed"],
    script:
        "../scripts/encode_texts.py"


rule train_fold:
    input:
        index="results/{dataset}/tensors/index.parquet",
        stats="results/{dataset}/tensors/stats.json",
        shards=get_trainval_shards,
        metric="results/{dataset}/intake/metric.json",
        features=get_features_index_if_extracted,
        vectors=get_text_vectors_if_encoded,
        network=get_network_if_decided,
        named=get_named_train_files,
    output:
        model="results/{dataset}/nn/fold-{fold}/model.keras",
        card="results/{dataset}/nn/fold-{fold}/model.json",
        metrics="results/{dataset}/nn/fold-{fold}/metrics.json",
        predictions="results/{dataset}/nn/fold-{fold}/predictions.parquet",
        history="results/{dataset}/nn/fold-{fold}/history.csv",
    log:
        "logs/{dataset}/train_fold-{fold}.log",
    benchmark:
        "benchmarks/{dataset}/train_fold-{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    priority: get_fold_priority
    threads: NETWORK_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=GPU_SLOT,
    params:
        dataset=get_dataset,
        train=get_train_settings,
        augment=get_augment_settings,
        tensors=get_tensor_settings,
        split=get_split_settings,
        seed=PARAMS["seed"],
        out_dir=get_fold_dir,
        features=get_features_settings,
    script:
        "../scripts/train_fold.py"


# Where auto took a pretrained image backbone, the folds also train the modality's network
# from scratch on the tensors, and nn_summary keeps whichever has the best CV score: how far
# ImageNet's features carry depends on the photos (Fashion-MNIST against digits).
use rule train_fold as train_scratch_fold with:
    input:
        index="results/{dataset}/tensors/index.parquet",
        stats="results/{dataset}/tensors/stats.json",
        shards=get_trainval_shards,
        metric="results/{dataset}/intake/metric.json",
        network="results/{dataset}/nn/network.json",
    output:
        model="results/{dataset}/nn/scratch/fold-{fold}/model.keras",
        card="results/{dataset}/nn/scratch/fold-{fold}/model.json",
        metrics="results/{dataset}/nn/scratch/fold-{fold}/metrics.json",
        predictions="results/{dataset}/nn/scratch/fold-{fold}/predictions.parquet",
        history="results/{dataset}/nn/scratch/fold-{fold}/history.csv",
    log:
        "logs/{dataset}/train_scratch_fold-{fold}.log",
    benchmark:
        "benchmarks/{dataset}/train_scratch_fold-{fold}.tsv"
    params:
        out_dir=beside_fold_dir("scratch"),
        beside="scratch",
        # it reads no embeddings, so a features setting does not retrain it
        features=None,


# Where auto took a pretrained image backbone for classes, under train.image.wide_fit auto
# the folds also train that transfer network with its linear part on pixels the step-2
# regression, frozen (wide_fit fitted, cheap on the cached embeddings), and nn_summary keeps
# the best of the three: a spectrogram's pixels carry the class by their place, a photo's
# do not.
use rule train_fold as train_fitted_fold with:
    output:
        model="results/{dataset}/nn/fitted/fold-{fold}/model.keras",
        card="results/{dataset}/nn/fitted/fold-{fold}/model.json",
        metrics="results/{dataset}/nn/fitted/fold-{fold}/metrics.json",
        predictions="results/{dataset}/nn/fitted/fold-{fold}/predictions.parquet",
        history="results/{dataset}/nn/fitted/fold-{fold}/history.csv",
    log:
        "logs/{dataset}/train_fitted_fold-{fold}.log",
    benchmark:
        "benchmarks/{dataset}/train_fitted_fold-{fold}.tsv"
    params:
        out_dir=beside_fold_dir("fitted"),
        beside="fitted",


rule nn_summary:
    input:
        metric="results/{dataset}/intake/metric.json",
        metrics=get_nn_fold_metrics,
        predictions=get_nn_fold_predictions,
        beside_metrics=get_beside_fold_metrics,
        beside_predictions=get_beside_fold_predictions,
        network=get_network_if_decided,
        baseline="results/{dataset}/baseline/summary.json",
    output:
        oof="results/{dataset}/nn/oof.parquet",
        headline="results/{dataset}/nn/headline.json",
        summary=report(
            "results/{dataset}/nn/summary.json",
            caption="../report/cv.rst",
            category="5 network",
            labels={"dataset": "{dataset}", "file": "CV summary"},
        ),
    log:
        "logs/{dataset}/nn_summary.log",
    benchmark:
        "benchmarks/{dataset}/nn_summary.tsv"
    priority: FINAL_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/nn_summary.py"
