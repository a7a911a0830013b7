"""Names of networks and importances as tables and figures show them, and the paper's network order."""

from __future__ import annotations

from typing import Iterable

NETWORK_ORDER = ("lenet5", "resnet32", "alexnet")
NETWORK_LABELS = {
    "lenet5": "LeNet-5 / MNIST",
    "resnet32": "ResNet-32 / CIFAR-10",
    "alexnet": "AlexNet / ImageNet",
}


def network_label(network: str) -> str:
    return NETWORK_LABELS.get(network, network)


def importance_label(importance: str) -> str:
    """``hessian-50000`` -> "Hessian, 50,000 samples"; ``adam`` -> "Alt-Hessian: Adam second moments"."""
    if importance.startswith("hessian-") and importance[len("hessian-"):].isdigit():
        return f"Hessian, {int(importance[len('hessian-'):]):,} samples"
    if importance == "adam":
        return "Alt-Hessian: Adam second moments"
    if importance == "none":
        return "no weighting"
    return importance



def ordered_networks(names: Iterable[str]) -> list[str]:
    """Networks in the paper's order (LeNet-5, ResNet-32, AlexNet), then any others alphabetically."""
    names = set(names)
    return [n for n in NETWORK_ORDER if n in names] + sorted(names - set(NETWORK_ORDER))

