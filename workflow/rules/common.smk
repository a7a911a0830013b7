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
    return expand("results/{net}/pruned/metrics.json", net=NETWORKS)
