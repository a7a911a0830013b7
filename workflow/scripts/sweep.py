from netquant import steps, sweeps

w = snakemake.wildcards
workers = steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
sweeps.sweep_curve(
    w.net, snakemake.params.finetune, method=w.method, importance_name=w.importance, scope=w.scope,
    quantize_cfg=snakemake.params.quantize, coding_cfg=snakemake.params.coding, model_path=snakemake.input.model,
    importance_path=snakemake.input.importance or None, source=snakemake.params.source,
    out_dir=snakemake.output.files, out_table=snakemake.output.table, seed=snakemake.params.seed,
    device=snakemake.params.device, workers=workers,
)
