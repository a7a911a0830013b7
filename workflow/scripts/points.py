from netquant import logs, report

logs.setup(snakemake.log[0])
out = snakemake.output
report.write_points(snakemake.input.tables, out_points=out.points, out_dp_gap=out.dp_gap_csv,
                    out_dp_gap_markdown=out.dp_gap, out_dp_gap_latex=out.dp_gap_tex,
                    figures=snakemake.params.figures, out_findings=out.findings,
                    out_findings_markdown=out.findings_md)
