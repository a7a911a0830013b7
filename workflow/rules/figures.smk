for _figure in ("fig1", "fig3", "layerwise"):

    rule:
        """Figures 1 and 3 and the layer-wise comparison, one file per network."""
        name:
            f"plot_{_figure}"
        input:
            unpack(
                lambda wildcards, figure=_figure: figure_inputs(figure, wildcards.net)
            ),
        output:
            pdf=report(
                f"results/figures/{_figure}-{{net}}.pdf",
                caption=f"../report/{_figure}.rst",
                category="Figures",
            ),
            png=f"results/figures/{_figure}-{{net}}.png",
        log:
            f"logs/figures/{_figure}-{{net}}.log",
        localrule: True
        conda:
            "../envs/netquant.yaml"
        params:
            figure=_figure,
            curves=lambda wildcards, figure=_figure: figure_curves(
                figure, wildcards.net
            ),
        script:
            "../scripts/figure.py"


rule figure2:
    input:
        tables=curve_tables("fig2"),
    output:
        pdf=report(
            "results/figures/fig2.pdf",
            caption="../report/fig2.rst",
            category="Figures",
        ),
        png="results/figures/fig2.png",
    log:
        "logs/figures/fig2.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    params:
        curves={net: figure_curves("fig2", net) for net in figure_networks("fig2")},
    script:
        "../scripts/figure2.py"


rule table1:
    """Table 1 (CSV, Markdown, LaTeX), paper vs ours, and the models before quantization."""
    input:
        tables=curve_tables("table1"),
        search=search_tables(),
        models=expand(
            "results/{net}/{variant}/metrics.json",
            net=NETWORKS,
            variant=["baseline", "pruned"],
        ),
        files=expand("results/{net}/pruned/file.json", net=NETWORKS),
    output:
        table1=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
        table1_csv="results/tables/table1.csv",
        table1_tex="results/tables/table1.tex",
        models="results/tables/models.csv",
        paper_vs_ours=report(
            "results/tables/paper_vs_ours.md",
            caption="../report/paper_vs_ours.rst",
            category="Tables",
        ),
    log:
        "logs/tables/table1.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    params:
        tolerance=config["table1_tolerance"],
        skipped=SKIPPED,
        scale=config["scale"],
    script:
        "../scripts/table1.py"


rule points:
    """The tidy table of every sweep point, and heuristics vs the DP optimum."""
    input:
        tables=all_curve_tables() + search_tables(),
    output:
        points="results/tables/points.csv",
        dp_gap=report(
            "results/tables/dp_gap.md",
            caption="../report/dp_gap.rst",
            category="Tables",
        ),
        dp_gap_csv="results/tables/dp_gap.csv",
        dp_gap_tex="results/tables/dp_gap.tex",
        findings="results/tables/findings.csv",
        findings_md=report(
            "results/tables/findings.md",
            caption="../report/findings.rst",
            category="Tables",
        ),
    log:
        "logs/tables/points.log",
    localrule: True
    conda:
        "../envs/netquant.yaml"
    params:
        figures={
            name: config["figures"].get(name, {}) for name in ("fig1", "fig2", "fig3")
        },
    script:
        "../scripts/points.py"


rule fig1:
    input:
        expand(
            "results/figures/fig1-{net}.{ext}",
            net=figure_networks("fig1"),
            ext=["pdf", "png"],
        ),


rule fig2:
    input:
        rules.figure2.output,


rule fig3:
    input:
        expand(
            "results/figures/fig3-{net}.{ext}",
            net=figure_networks("fig3"),
            ext=["pdf", "png"],
        ),


rule layerwise:
    input:
        expand(
            "results/figures/layerwise-{net}.{ext}",
            net=figure_networks("layerwise"),
            ext=["pdf", "png"],
        ),
