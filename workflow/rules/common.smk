import os

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

NETWORKS = list(config["networks"])
DATASET_OF = {net: config[net]["dataset"] for net in NETWORKS}
PREPARED_DATASETS = sorted({d for d in DATASET_OF.values() if d != "imagenet"})
THREADS = config["threads"]
SEED = config["seed"]
DEVICE = config["device"]

if "alexnet" in NETWORKS and not config.get("imagenet_root"):
    raise WorkflowError(
        "config: 'networks' lists alexnet but 'imagenet_root' is not set; set imagenet_root to an ImageNet "
        "folder (train/<class>/*, val/<class>/*) or remove alexnet from 'networks'"
    )


wildcard_constraints:
    net="|".join(NETWORKS) or "none",
    dataset="|".join(PREPARED_DATASETS) or "none",
    variant="baseline|pruned",


def prepared_data(wildcards):
    """The prepared tensor file of a network's dataset (nothing for streamed ImageNet)."""
    dataset = DATASET_OF[wildcards.net]
    return [] if dataset == "imagenet" else f"resources/data/{dataset}.pt"


def net_config(wildcards):
    return config[wildcards.net]


def imagenet_root():
    return config.get("imagenet_root") or None


def all_targets():
    return expand("results/{net}/pruned/metrics.json", net=NETWORKS)
