rule prepare_data:
    output:
        "resources/data/{dataset}.pt",
    params:
        data_root=config["data_root"],
        download=config["download"],
        synthetic=config["synthetic"],
        seed=SEED,
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
