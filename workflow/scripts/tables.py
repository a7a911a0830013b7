from netquant import report, steps

steps.setup(1, 0, snakemake.log[0])
report.write_tables(
    curve_tables=snakemake.input.tables, model_metrics=snakemake.input.models, file_metrics=snakemake.input.files,
    out_dir=snakemake.params.out_dir, tolerance=snakemake.params.tolerance, hessian=snakemake.params.hessian,
    skipped=snakemake.params.skipped, scale=snakemake.params.scale,
)
