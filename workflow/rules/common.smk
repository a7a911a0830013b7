import os

from snakemake.utils import validate

from netquant import config as netquant_config, vocabulary

# --config download=false arrives as the string "false"; the schema wants a boolean
if str(config.get("download")).lower() in ("true", "false"):
    config["download"] = str(config["download"]).lower() == "true"
netquant_config.check_files(workflow.overwrite_configfiles or [])
validate(config, "../schemas/config.schema.yaml")
netquant_config.check(config)

DATASET_OF = {net: config[net]["dataset"] for net in config["networks"]}
# A network on ImageNet runs only when imagenet_root is set; otherwise it is skipped and the tables say why.
SKIPPED = {
    net: "imagenet_root is not set (config key 'imagenet_root': a folder with train/<class>/* and val/<class>/*)"
    for net, dataset in DATASET_OF.items()
    if dataset == "imagenet" and not config.get("imagenet_root")
}
NETWORKS = [net for net in config["networks"] if net not in SKIPPED]
for net, why in SKIPPED.items():
    logger.warning(f"netquant: {net} is skipped: {why}")
FOLDER_DATASETS = vocabulary.FOLDER_DATASETS
PREPARED_DATASETS = sorted({d for d in DATASET_OF.values() if d not in FOLDER_DATASETS})
SYNTHETIC_IMAGENET = "resources/data/synthetic-imagenet"
THREADS = config["threads"]
# Training runs alone on a small machine unless told otherwise: it then uses every core Snakemake was given.
TRAIN_THREADS = (
    config["train_threads"]
    if config["train_threads"] != "all"
    else min(workflow.cores or THREADS, os.cpu_count() or 1)
)
SEED = config["seed"]
DEVICE = config["device"]
FIGURES = (
    vocabulary.FIGURE_MODELS
)  # the model variant and scope of each figure's and table's curves


wildcard_constraints:
    net="|".join(NETWORKS) or "none",
    dataset="|".join(PREPARED_DATASETS) or "none",
    variant="|".join(vocabulary.VARIANTS),
    scope="|".join(vocabulary.SCOPES),
    method="|".join(vocabulary.METHODS),
    importance=vocabulary.IMPORTANCE_PATTERN,
    floor="|".join(vocabulary.FLOORS),


# ------------------------------------------------------------------------------------------- data


def data_input(wildcards):
    """The prepared tensor file of a network's dataset, the generated synthetic ImageNet, or nothing."""
    dataset = DATASET_OF[wildcards.net]
    if dataset == "imagenet":
        return []
    if dataset == "synthetic-imagenet":
        return SYNTHETIC_IMAGENET
    return f"resources/data/{dataset}.pt"


def data_source(wildcards):
    """Where a network's data comes from, as the steps read it (only what affects the results)."""
    net = config[wildcards.net]
    dataset = net["dataset"]
    source = {"dataset": dataset}
    if dataset == "imagenet":
        source["imagenet_root"] = config["imagenet_root"]
    elif dataset == "synthetic-imagenet":
        source["imagenet_root"] = SYNTHETIC_IMAGENET
    else:
        source["prepared"] = f"resources/data/{dataset}.pt"
    if dataset in FOLDER_DATASETS:
        source.update(image_size=net["image_size"], resize=net["resize"])
    return source


def network_section(*keys):
    """A params function giving only ``keys`` of the network's config section, so that a change elsewhere in
    the section does not rerun the rule."""

    def section(wildcards):
        net = config[wildcards.net]
        return {key: net[key] for key in keys if key in net}

    return section


def finetune_section(wildcards, variant=None):
    """The fine-tuning settings of the curve's model (netquant.config.finetune_of)."""
    return netquant_config.finetune_of(
        config, wildcards.net, variant or wildcards.variant
    )


def quantize_section(wildcards):
    """The quantize section of the curve (netquant.config.quantize_of)."""
    return netquant_config.quantize_of(config, wildcards.net, wildcards.method)


def importance_params(wildcards):
    section = config["importance"]
    if wildcards.importance == "adam":
        return {"adam": section["adam"]}
    return {key: section[key] for key in ("estimator", "batch_size", "clamp")}


def importance_input(wildcards, variant=None):
    if wildcards.importance == "none":
        return []
    return f"results/{wildcards.net}/{variant or wildcards.variant}/importance/{wildcards.importance}.pt"


# ------------------------------------------------------------------------------------------- targets


def curve_tables(figure, net=None, scope=None):
    """The points.csv of every curve a figure or table needs, for the networks that run (or one network)."""
    variant, figure_scope = FIGURES[figure]
    return [
        f"results/{name}/{variant}/sweep/{scope or figure_scope}/{curve}/points.csv"
        for name, curves in config["figures"][figure].items()
        if name in NETWORKS and (net is None or name == net)
        for curve in curves
    ]


def figure_inputs(figure, net):
    """Figures 1 and 3 draw their own curves; the layer-wise figure also the same curves with all layers
    together, and a line at the pruned model's accuracy."""
    tables = curve_tables(figure, net)
    if figure == "layerwise":
        tables += curve_tables("layerwise", net, scope="all")
        return {"tables": tables, "reference": f"results/{net}/pruned/metrics.json"}
    return {"tables": tables, "reference": f"results/{net}/baseline/metrics.json"}


def search_section(wildcards):
    """The search settings of a network: its own ``<net>.search`` where it has one, else ``search``."""
    return config[wildcards.net].get("search") or config["search"]


def search_tables():
    """The operating-point searches of Table 1's curves, one per floor of each network's search settings
    (none for a network whose ``max_probes`` is 0)."""
    tables = []
    for net in figure_networks("table1"):
        settings = config[net].get("search") or config["search"]
        if settings["max_probes"] == 0:
            continue
        for curve in config["figures"]["table1"][net]:
            for floor in settings["floors"]:
                tables.append(f"results/{net}/pruned/search/{curve}/{floor}/points.csv")
    return tables


def all_curve_tables():
    return sorted({table for figure in FIGURES for table in curve_tables(figure)})


def figure_networks(figure):
    return [net for net in config["figures"][figure] if net in NETWORKS]


def figure_curves(figure, net):
    """The curves ("method/importance") a figure draws for one network, as the config lists them."""
    return config["figures"][figure].get(net, [])


def all_targets():
    figures = [
        f"results/figures/{figure}-{net}.{ext}"
        for figure in ("fig1", "fig3", "layerwise")
        for net in figure_networks(figure)
        for ext in ("pdf", "png")
    ]
    return figures + [
        "results/figures/fig2.pdf",
        "results/tables/points.csv",
        "results/tables/table1.md",
    ]
