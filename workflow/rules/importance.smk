rule importance:
    input:
        data=data_input,
        model="results/{net}/{variant}/model.pt",
    output:
        importance="results/{net}/{variant}/importance/{importance}.pt",
        summary="results/{net}/{variant}/importance/{importance}.json",
    params:
        importance=importance_params,
        source=data_source,
        seed=SEED,
        device=DEVICE,
    log:
        "logs/importance/{net}-{variant}-{importance}.log",
    benchmark:
        "logs/benchmarks/importance/{net}-{variant}-{importance}.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/importance.py"
