# The embedded demo datasets: real public data written under data/raw/<name>/.


rule demo_data:
    output:
        directory("data/raw/{demo_dataset}"),
    log:
        "logs/{demo_dataset}/demo_data.log",
    benchmark:
        "benchmarks/{demo_dataset}/demo_data.tsv"
    priority: PREPARE_PRIORITY
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        source=get_demo_source,
        demo=PARAMS["demo"],
        seed=PARAMS["seed"],
    script:
        "../scripts/demo_data.py"
