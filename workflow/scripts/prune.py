from netquant import steps

workers = steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
steps.prune_network(
    snakemake.wildcards.net, snakemake.params.net, baseline=snakemake.input.baseline, source=snakemake.params.source,
    out_model=snakemake.output.model, out_metrics=snakemake.output.metrics, out_epochs=snakemake.output.epochs,
    seed=snakemake.params.seed, device=snakemake.params.device, workers=workers,
)
