from netquant import logs, report

logs.setup(snakemake.log[0])
out = snakemake.output
report.write_table1(
    curve_tables=snakemake.input.tables, model_metrics=snakemake.input.models, file_metrics=snakemake.input.files,
    out_table=out.table1_csv, out_markdown=out.table1, out_latex=out.table1_tex, out_models=out.models,
    out_paper_vs_ours=out.paper_vs_ours, tolerance=snakemake.params.tolerance,
    skipped=snakemake.params.skipped, scale=snakemake.params.scale, search_tables=snakemake.input.search,
)
