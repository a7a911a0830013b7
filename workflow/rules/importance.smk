rule importance:
    input:
        data=prepared_data,
        model="results/{net}/{variant}/model.pt",
    output:
        importance="results/{net}/{variant}/importance/{importance}.pt",
        summary="results/{net}/{variant}/importance/{importance}.json",
    params:
        net=net_config,
        importance=config["importance"],
        imagenet_root=imagenet_root,
        data=tensor_data,
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
