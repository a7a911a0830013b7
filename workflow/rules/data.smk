rule prepare_data:
    output:
        "resources/data/{dataset}.pt",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        data_root=config["data_root"],
        # synthetic data depends on its sizes and the seed; real data on nothing but the files
        synthetic=lambda wildcards: (
            {**config["synthetic"], "seed": SEED}
            if wildcards.dataset.startswith("synthetic")
            else None
        ),
    script:
        "../scripts/prepare_data.py"


rule synthetic_imagenet:
    output:
        directory(SYNTHETIC_IMAGENET),
    log:
        "logs/prepare_data/synthetic-imagenet.log",
    conda:
        "../envs/netquant.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        seed=SEED,
    script:
        "../scripts/synthetic_imagenet.py"
