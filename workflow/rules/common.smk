import os

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

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
PREPARED_DATASETS = sorted({d for d in DATASET_OF.values() if not d.endswith("imagenet")})
THREADS = config["threads"]
SEED = config["seed"]
DEVICE = config["device"]



wildcard_constraints:
    net="|".join(NETWORKS) or "none",
    dataset="|".join(PREPARED_DATASETS) or "none",
    variant="baseline|pruned",


def prepared_data(wildcards):
    """The prepared tensor file of a network's dataset; the folder of a synthetic ImageNet; nothing for ImageNet."""
    dataset = DATASET_OF[wildcards.net]
    if dataset == "imagenet":
        return []
    if dataset == "synthetic-imagenet":
        return SYNTHETIC_IMAGENET
    return f"resources/data/{dataset}.pt"


def net_config(wildcards):
    return config[wildcards.net]


SYNTHETIC_IMAGENET = "resources/data/synthetic-imagenet"


def imagenet_root(wildcards):
    """The ImageNet folder a network reads: config's imagenet_root, or the generated synthetic one."""
    if DATASET_OF[wildcards.net] == "synthetic-imagenet":
        return SYNTHETIC_IMAGENET
    return config.get("imagenet_root") or None


def tensor_data(wildcards, input):
    """The prepared tensor file among a job's inputs, or None for ImageNet folders."""
    return str(input.data) if DATASET_OF[wildcards.net] in PREPARED_DATASETS else None


def all_targets():
    figures = [
        f"results/figures/{figure}-{net}.{ext}"
        for figure in ("fig1", "fig3", "layerwise")
        for net in figure_networks(figure)
        for ext in ("pdf", "png")
    ]
    return figures + ["results/figures/fig2.pdf", "results/tables/points.csv", "results/tables/table1.md"]


wildcard_constraints:
    scope="all|layer",
    method="kmeans|hwkmeans|uniform|ecsq|dp-kmeans|dp-ecsq",
    importance=r"none|adam|hessian-\d+",


def importance_input(wildcards):
    if wildcards.importance == "none":
        return []
    return f"results/{wildcards.net}/{wildcards.variant}/importance/{wildcards.importance}.pt"


def curve_tables(figure, net=None):
    """The points.csv of every curve a figure or table needs, for the networks that run (or one network)."""
    spec = config["figures"][figure]
    return [
        f"results/{name}/{spec['variant']}/sweep/{spec['scope']}/{curve}/points.csv"
        for name, curves in spec["curves"].items()
        if name in NETWORKS and (net is None or name == net)
        for curve in curves
    ]


def all_curve_tables():
    return sorted({table for figure in config["figures"] for table in curve_tables(figure)})


def figure_networks(figure):
    return [net for net in config["figures"][figure]["curves"] if net in NETWORKS]


def main_hessian(figure):
    """The Hessian importance a figure or table uses as "the" Hessian: the first hessian-N in its curves."""
    for curves in config["figures"][figure]["curves"].values():
        for curve in curves:
            importance = curve.split("/")[1]
            if importance.startswith("hessian-"):
                return importance
    return "hessian-50000"


def figure_importances(figure):
    """The importances of a figure's curves, in order of first appearance."""
    curves = config["figures"][figure]["curves"].values()
    return list(dict.fromkeys(curve.split("/")[1] for names in curves for curve in names))
