rule importance:
    input:
        data=data_input,
        model="results/{net}/{variant}/model.pt",
    output:
        importance="results/{net}/{variant}/importance/{importance}.pt",
        summary="results/{net}/{variant}/importance/{importance}.json",
    log:
        "logs/importance/{net}-{variant}-{importance}.log",
    benchmark:
        "logs/benchmarks/importance/{net}-{variant}-{importance}.tsv"
    conda:
        "../envs/netquant.yaml"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        importance=importance_params,
        source=data_source,
        seed=SEED,
        device=DEVICE,
    script:
        "../scripts/importance.py"
