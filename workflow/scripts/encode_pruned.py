from netquant import steps

steps.setup(snakemake.threads, snakemake.params.seed, snakemake.log[0])
steps.encode_pruned(snakemake.wildcards.net, model_path=snakemake.input.model, metrics_path=snakemake.input.metrics,
                    source=snakemake.params.source, coding_cfg=snakemake.params.coding,
                    out_file=snakemake.output.file, out_metrics=snakemake.output.metrics)
