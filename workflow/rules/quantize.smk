rule sweep:
    """One curve: quantize at every rate of the grid, fine-tune, encode to .nqz, evaluate the decoded files."""
    input:
        data=data_input,
        model="results/{net}/{variant}/model.pt",
        importance=importance_input,
    output:
        table="results/{net}/{variant}/sweep/{scope}/{method}/{importance}/points.csv",
        files=directory(
            "results/{net}/{variant}/sweep/{scope}/{method}/{importance}/files"
        ),
    log:
        "logs/sweep/{net}-{variant}-{scope}-{method}-{importance}.log",
    benchmark:
        "logs/benchmarks/sweep/{net}-{variant}-{scope}-{method}-{importance}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        finetune=finetune_section,
        quantize=quantize_section,
        coding=config["coding"],
        source=data_source,
        seed=SEED,
        device=DEVICE,
    script:
        "../scripts/sweep.py"


rule encode_pruned:
    """The pruned model before quantization as a file: 32-bit kept values + coded positions."""
    input:
        data=data_input,
        model="results/{net}/pruned/model.pt",
        metrics="results/{net}/pruned/metrics.json",
    output:
        file="results/{net}/pruned/model.nqz",
        metrics="results/{net}/pruned/file.json",
    log:
        "logs/encode_pruned/{net}.log",
    benchmark:
        "logs/benchmarks/encode_pruned/{net}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        coding=config["coding"],
        source=data_source,
        seed=SEED,
    script:
        "../scripts/encode_pruned.py"


rule search:
    """Operating-point search of a Table 1 curve: the largest ratio whose mean accuracy over several
    fine-tuning seeds meets a floor (the pruned model's, or the paper's)."""
    input:
        data=data_input,
        sweep="results/{net}/pruned/sweep/all/{method}/{importance}/points.csv",
        model="results/{net}/pruned/model.pt",
        metrics="results/{net}/pruned/metrics.json",
        importance=lambda wildcards: importance_input(wildcards, variant="pruned"),
    output:
        table="results/{net}/pruned/search/{method}/{importance}/{floor}/points.csv",
        files=directory(
            "results/{net}/pruned/search/{method}/{importance}/{floor}/files"
        ),
    log:
        "logs/search/{net}-{method}-{importance}-{floor}.log",
    benchmark:
        "logs/benchmarks/search/{net}-{method}-{importance}-{floor}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=480,
    params:
        finetune=lambda wildcards: finetune_section(wildcards, variant="pruned"),
        quantize=quantize_section,
        coding=config["coding"],
        search=search_section,
        source=data_source,
        seed=SEED,
        device=DEVICE,
    script:
        "../scripts/search.py"
