from netquant import logs, report

logs.setup(snakemake.log[0])
report.plot_figure2(report.read_points(snakemake.input.tables), snakemake.params.curves,
                    snakemake.output.pdf, snakemake.output.png)
