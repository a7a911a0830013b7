from netquant import steps

workers = steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
steps.train_baseline(
    snakemake.wildcards.net, snakemake.params.net, source=snakemake.params.source,
    out_model=snakemake.output.model, out_metrics=snakemake.output.metrics, out_epochs=snakemake.output.epochs,
    seed=snakemake.params.seed, device=snakemake.params.device, workers=workers,
)
