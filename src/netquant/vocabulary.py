"""The names the library, the workflow's rules and the config schema share, defined once.

The workflow builds its wildcard constraints from these, and ``tests/test_workflow.py`` checks that the
config schema's enums are exactly these.
"""

from __future__ import annotations

import re

# quantizers (netquant.quantize)
# uniform-zero: uniform quantization whose zero bin decodes to exactly 0 and joins the pruned positions
METHODS = ("kmeans", "hwkmeans", "uniform", "ecsq", "dp-kmeans", "dp-ecsq", "uniform-zero")
INITS = ("linear", "quantile", "random")
SCOPES = ("all", "layer")  # one codebook for all layers (the paper) or one per layer (Deep Compression)

# importance of the weights (netquant.importance): none, adam, or hessian-<samples>
ESTIMATORS = ("ggn", "becker-lecun", "ggn-mc", "hutchinson")
# the library's default: the Gauss-Newton diagonal's Monte-Carlo estimate, close to the exact one at a fraction
# of its cost (config/README.md: importance.estimator)
DEFAULT_ESTIMATOR = "ggn-mc"
IMPORTANCE_PATTERN = r"none|adam|hessian-[0-9]+"

# networks and data (netquant.models, netquant.data)
ARCHS = ("lenet5", "resnet32", "alexnet")
FOLDER_DATASETS = ("imagenet", "synthetic-imagenet")  # streamed from an image folder
TENSOR_DATASETS = ("mnist", "cifar10", "synthetic-mnist", "synthetic-cifar10")  # prepared into memory
DATASETS = TENSOR_DATASETS + FOLDER_DATASETS
# the real datasets prepared into memory: training images, test images, image shape (checked on preparing)
DATASET_SPLITS = {"mnist": (60000, 10000, (1, 28, 28)), "cifar10": (50000, 10000, (3, 32, 32))}

# the codes of a .nqz file (netquant.coding; the codec table netquant.container.codes stores each ID)
LABEL_CODES = ("fixed", "huffman", "ans", "raw", "ans-layer", "plane-context")
INDEX_CODES = ("deep-compression", "mask-ans", "mask-context", "plane-context")

# the accuracy floors of an operating-point search: the pruned model's accuracy, the paper's Table 1 value
FLOORS = ("pruned", "paper")

# the model a sweep starts from
VARIANTS = ("baseline", "pruned")

# The model variant and quantization scope of the curves of each figure and table; the workflow asks for
# exactly these sweeps and netquant.report draws and selects from exactly these.
FIGURE_MODELS: dict[str, tuple[str, str]] = {
    "fig1": ("baseline", "all"),
    "fig2": ("baseline", "all"),
    "fig3": ("baseline", "all"),
    "table1": ("pruned", "all"),
    "layerwise": ("pruned", "layer"),  # and the same curves with scope "all", to compare
}


def hessian_samples(importance: str) -> int | None:
    """``"hessian-1000"`` -> 1000; None for the other importances."""
    match = re.fullmatch(r"hessian-([0-9]+)", importance)
    return int(match.group(1)) if match else None
