from netquant import logs, report
from netquant.io import read_json

logs.setup(snakemake.log[0])
figure, net = snakemake.params.figure, snakemake.wildcards.net
points = report.read_points(snakemake.input.tables)
reference = read_json(snakemake.input.reference)["accuracy"]
out = dict(out_pdf=snakemake.output.pdf, out_png=snakemake.output.png, curves=snakemake.params.curves)
if figure == "fig1":
    report.plot_figure1(points, net, reference_accuracy=reference, **out)
elif figure == "fig3":
    report.plot_figure3(points, net, **out)
else:
    report.plot_layerwise(points, net, reference_accuracy=reference, **out)
