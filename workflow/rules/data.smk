rule prepare_data:
    output:
        "resources/data/{dataset}.pt",
    params:
        data_root=config["data_root"],
        # synthetic data depends on its sizes and the seed; real data on nothing but the files
        synthetic=lambda wildcards: (
            {**config["synthetic"], "seed": SEED} if wildcards.dataset.startswith("synthetic") else None
        ),
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_data/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/prepare_data.py"


rule synthetic_imagenet:
    output:
        directory(SYNTHETIC_IMAGENET),
    params:
        seed=SEED,
    log:
        "logs/prepare_data/synthetic-imagenet.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/synthetic_imagenet.py"
