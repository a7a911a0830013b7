from netquant import steps

workers = steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
steps.compute_importance(
    snakemake.wildcards.net, snakemake.params.importance, snakemake.wildcards.importance,
    model_path=snakemake.input.model, source=snakemake.params.source, out=snakemake.output.importance,
    out_summary=snakemake.output.summary, seed=snakemake.params.seed, device=snakemake.params.device,
    workers=workers,
)
