"""Checks of a workflow configuration that a JSON schema cannot express: constraints between keys, and
values whose meaning is known before anything runs. The workflow calls :func:`check` when it loads, so a
bad config stops ``snakemake -n`` with one message naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netquant.vocabulary import DATASET_SPLITS, FOLDER_DATASETS, hessian_samples

# k = 2^bits clusters: beyond 2^24 a codebook (and a label alphabet) is larger than any network's weights
MAX_BITS = 24.0


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and what to put there."""


def check(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` on the first problem found."""
    if not config.get("networks"):
        raise ConfigError("config key 'networks' is empty; list at least one of lenet5, resnet32, alexnet")
    for section in [("quantize", "rates")] + [(net, "rates") for net in config["networks"]]:
        rates = config.get(section[0], {}).get(section[1])
        if rates is not None:
            check_rates(rates, ".".join(section))
            for method, own in rates.get("methods", {}).items():
                check_rates({**rates, **own}, f"{'.'.join(section)}.methods.{method}")
    for figure, curves in config.get("figures", {}).items():
        for net, names in curves.items():
            for curve in names:
                importance = curve.split("/", 1)[1]
                samples = hessian_samples(importance)
                key = f"figures.{figure}.{net}"
                if samples == 0:
                    raise ConfigError(f"{key}: {curve!r} asks for a Hessian from 0 samples; use hessian-N with "
                                      "N >= 1 (the paper: 50000 and 1000)")
                dataset = config.get(net, {}).get("dataset")
                if samples and dataset in DATASET_SPLITS and samples > DATASET_SPLITS[dataset][0]:
                    raise ConfigError(f"{key}: {curve!r} asks for {samples} training samples, {dataset} has "
                                      f"{DATASET_SPLITS[dataset][0]}")
    root = config.get("imagenet_root")
    uses_imagenet = any(config.get(net, {}).get("dataset") in FOLDER_DATASETS for net in config["networks"])
    if root and uses_imagenet and Path(root).exists():
        missing = [split for split in ("train", "val") if not (Path(root) / split).is_dir()]
        if missing:
            raise ConfigError(f"imagenet_root={root!r} has no {' and no '.join(missing)} folder; it must hold "
                              "train/<class>/* and val/<class>/* (torchvision's ImageFolder layout)")


def check_files(paths) -> None:
    """A config file's empty mapping (``rates: {}``) would be refilled from the default config without a
    word (Snakemake merges config files key by key): refuse it, naming the file and the key."""
    import yaml

    def empty_keys(node, prefix: str):
        if isinstance(node, dict):
            if not node and prefix:
                yield prefix
            for key, value in node.items():
                yield from empty_keys(value, f"{prefix}.{key}" if prefix else str(key))

    for path in paths:
        for key in empty_keys(yaml.safe_load(Path(path).read_text()) or {}, ""):
            raise ConfigError(f"{path}: config key '{key}' is an empty mapping, which would silently take every "
                              "value of config/config.yaml's; give its keys (config/README.md), or remove it")


def finetune_of(config: dict[str, Any], net: str, variant: str) -> dict[str, Any]:
    """The fine-tuning settings of a network's points of the ``variant`` model: ``<net>.finetune``, with
    ``pruned_steps`` (where set) as the steps of the pruned model's points - Table 1's and its search's."""
    settings = dict(config[net]["finetune"])
    pruned_steps = settings.pop("pruned_steps", None)
    if variant == "pruned" and pruned_steps is not None:
        settings["steps"] = pruned_steps
    return settings


def quantize_of(config: dict[str, Any], net: str, method: str) -> dict[str, Any]:
    """The quantize section of a network's curves of ``method``: ``quantize`` with the network's own
    ``quantize_params`` (where set) as ``params`` and the curve's rate grid (:func:`rate_grid_of`)."""
    params = config.get(net, {}).get("quantize_params") or config["quantize"]["params"]
    return {**config["quantize"], "params": params, "rates": rate_grid_of(config, net, method)}


def rate_grid_of(config: dict[str, Any], net: str, method: str) -> dict[str, Any]:
    """The rate grid (bits_min, bits_max, points) of a network's curves of ``method``: the network's own
    (``<net>.rates``) where it has one, else ``quantize.rates``; within it, the method's (``methods.<method>``)."""
    rates = dict(config.get(net, {}).get("rates") or config["quantize"]["rates"])
    own = rates.pop("methods", {}).get(method, {})
    return {**rates, **own}


def check_rates(rates: dict[str, Any], key: str = "quantize.rates") -> None:
    low, high, points = rates["bits_min"], rates["bits_max"], rates["points"]
    if not 0 <= low <= high:
        raise ConfigError(f"{key}: bits_min={low} and bits_max={high}; need 0 <= bits_min <= bits_max")
    if high > MAX_BITS:
        raise ConfigError(f"{key}: bits_max={high} asks for up to 2^{high:g} clusters; at most {MAX_BITS:g} bits")
    if points < 1:
        raise ConfigError(f"{key}: points={points}; need at least 1")
