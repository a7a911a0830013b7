"""BatchNorm running statistics folded into the layer's own affine parameters.

In eval mode a BatchNorm layer computes ``gamma * (x - mean) / sqrt(var + eps) + beta``: the same function
as ``gamma' * x + beta'`` with ``gamma' = gamma / sqrt(var + eps)`` and ``beta' = beta - gamma' * mean``.
A folded layer keeps its parameters (N, the paper's parameter count, is unchanged) and its statistics
become constants - mean 0, variance ``1 - eps`` - that a file stores as one value each
(``netquant.container``). The network a file decodes to is the eval-mode network: training it further
needs the unfolded statistics, so folding is for what is written, after fine-tuning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from netquant.qmodel import QuantizedModel

STATISTICS = ("running_mean", "running_var")


def foldable(model: nn.Module, qmodel: QuantizedModel) -> dict[str, float]:
    """BatchNorm layers of ``model`` (prefix -> eps) whose affine parameters and statistics are stored as
    they are in ``qmodel`` (not quantized), so that folding changes only stored values."""
    layers = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.affine:
            continue
        if module.running_mean is None:
            continue
        names = [f"{prefix}.{key}" for key in ("weight", "bias", *STATISTICS)]
        if all(name in qmodel.passthrough for name in names):
            layers[prefix] = float(module.eps)
    return layers


def fold(qmodel: QuantizedModel, model: nn.Module) -> QuantizedModel:
    """``qmodel`` with every foldable BatchNorm layer of ``model`` folded (see the module docstring); the
    decoded network's eval-mode outputs equal the unfolded one's up to float32 rounding."""
    passthrough = dict(qmodel.passthrough)
    for prefix, eps in foldable(model, qmodel).items():
        gamma, beta, mean, var = (np.asarray(passthrough[f"{prefix}.{key}"], np.float64)
                                  for key in ("weight", "bias", *STATISTICS))
        scale = gamma / np.sqrt(var + eps)
        dtype = np.asarray(passthrough[f"{prefix}.weight"]).dtype
        passthrough[f"{prefix}.weight"] = scale.astype(dtype)
        passthrough[f"{prefix}.bias"] = (beta - scale * mean).astype(dtype)
        passthrough[f"{prefix}.running_mean"] = np.zeros_like(passthrough[f"{prefix}.running_mean"])
        passthrough[f"{prefix}.running_var"] = np.full_like(passthrough[f"{prefix}.running_var"], 1.0 - eps)
    return QuantizedModel(qmodel.codebooks, qmodel.tensors, passthrough, qmodel.order, qmodel.param_names,
                          network=dict(qmodel.network))


def reestimate(model: nn.Module, qmodel: QuantizedModel, batches, *, device: str = "cpu") -> QuantizedModel:
    """``qmodel`` (unfolded) with the BatchNorm running statistics of its network measured again: the
    average over ``batches`` ((inputs, targets) pairs) of train-mode batch statistics, no weight changed.
    Quantization moves every layer's outputs; statistics measured on the quantized network match them."""
    model.load_state_dict(qmodel.state_dict())
    model.to(device)
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for inputs, _ in batches:
            model(inputs.to(device))
    model.eval()
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    state = model.state_dict()
    passthrough = {name: (state[name].detach().cpu().numpy().astype(np.asarray(value).dtype)
                          if name.rsplit(".", 1)[-1] in (*STATISTICS, "num_batches_tracked") else value)
                   for name, value in qmodel.passthrough.items()}
    return QuantizedModel(qmodel.codebooks, qmodel.tensors, passthrough, qmodel.order, qmodel.param_names,
                          network=dict(qmodel.network))
