rule train:
    input:
        data=data_input,
    output:
        model="results/{net}/baseline/model.pt",
        metrics="results/{net}/baseline/metrics.json",
        epochs="results/{net}/baseline/epochs.csv",
    log:
        "logs/train/{net}.log",
    benchmark:
        "logs/benchmarks/train/{net}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        net=network_section("train", "pretrained"),
        source=data_source,
        seed=SEED,
        device=DEVICE,
    script:
        "../scripts/train.py"


rule prune:
    input:
        data=data_input,
        baseline="results/{net}/baseline/model.pt",
    output:
        model="results/{net}/pruned/model.pt",
        metrics="results/{net}/pruned/metrics.json",
        epochs="results/{net}/pruned/epochs.csv",
    log:
        "logs/prune/{net}.log",
    benchmark:
        "logs/benchmarks/prune/{net}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        net=network_section("prune"),
        source=data_source,
        seed=SEED,
        device=DEVICE,
    script:
        "../scripts/prune.py"
