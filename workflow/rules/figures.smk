rule figure:
    """Figures 1 and 3 and the layer-wise comparison, one file per network."""
    input:
        tables=lambda wildcards: curve_tables(wildcards.figure, wildcards.net),
        baseline="results/{net}/baseline/metrics.json",
    output:
        pdf=report("results/figures/{figure}-{net}.pdf", caption="../report/{figure}.rst", category="Figures"),
        png="results/figures/{figure}-{net}.png",
    params:
        hessian=lambda wildcards: main_hessian(wildcards.figure),
    wildcard_constraints:
        figure="fig1|fig3|layerwise",
    log:
        "logs/figures/{figure}-{net}.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/figure.py"


rule figure2:
    input:
        tables=curve_tables("fig2"),
    output:
        pdf=report("results/figures/fig2.pdf", caption="../report/fig2.rst", category="Figures"),
        png="results/figures/fig2.png",
    params:
        networks=lambda wildcards: figure_networks("fig2"),
        importances=lambda wildcards: figure_importances("fig2"),
    log:
        "logs/figures/fig2.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/figure2.py"


rule tables:
    """The tidy points table, Table 1 (CSV, Markdown, LaTeX), paper vs ours, and the DP-gap table."""
    input:
        tables=all_curve_tables(),
        models=expand("results/{net}/{variant}/metrics.json", net=NETWORKS, variant=["baseline", "pruned"]),
        files=expand("results/{net}/pruned/file.json", net=NETWORKS),
    output:
        points="results/tables/points.csv",
        models="results/tables/models.csv",
        table1=report("results/tables/table1.md", caption="../report/table1.rst", category="Tables"),
        table1_csv="results/tables/table1.csv",
        table1_tex="results/tables/table1.tex",
        paper_vs_ours=report("results/tables/paper_vs_ours.md", caption="../report/paper_vs_ours.rst",
                             category="Tables"),
        dp_gap=report("results/tables/dp_gap.md", caption="../report/dp_gap.rst", category="Tables"),
    params:
        tolerance=config["figures"]["table1"]["tolerance"],
        hessian=main_hessian("table1"),
        skipped=SKIPPED,
        scale=config["scale"],
        out_dir=lambda wildcards, output: os.path.dirname(output.points),
    log:
        "logs/tables.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    script:
        "../scripts/tables.py"


rule fig1:
    input:
        expand("results/figures/fig1-{net}.{ext}", net=figure_networks("fig1"), ext=["pdf", "png"]),


rule fig2:
    input:
        rules.figure2.output,


rule fig3:
    input:
        expand("results/figures/fig3-{net}.{ext}", net=figure_networks("fig3"), ext=["pdf", "png"]),


rule layerwise:
    input:
        expand("results/figures/layerwise-{net}.{ext}", net=figure_networks("layerwise"), ext=["pdf", "png"]),


rule table1:
    input:
        rules.tables.output,
