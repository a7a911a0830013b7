from netquant import steps, sweeps

w = snakemake.wildcards
workers = steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
sweeps.search_curve(
    w.net, snakemake.params.finetune, method=w.method, importance_name=w.importance,
    quantize_cfg=snakemake.params.quantize, coding_cfg=snakemake.params.coding, search_cfg=snakemake.params.search,
    floor_name=w.floor, sweep_table=snakemake.input.sweep, model_path=snakemake.input.model,
    model_metrics=snakemake.input.metrics, importance_path=snakemake.input.importance or None,
    source=snakemake.params.source, out_dir=snakemake.output.files, out_table=snakemake.output.table,
    seed=snakemake.params.seed, device=snakemake.params.device, workers=workers,
)
