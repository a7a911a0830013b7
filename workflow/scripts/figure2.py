from netquant import report, steps

steps.setup(1, 0, snakemake.log[0])
report.plot_figure2(report.read_points(snakemake.input.tables), snakemake.params.networks,
                    snakemake.output.pdf, snakemake.output.png, importances=snakemake.params.importances)
