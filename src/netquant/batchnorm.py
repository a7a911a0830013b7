"""BatchNorm running statistics folded into the layer's own affine parameters.

In eval mode a BatchNorm layer computes ``gamma * (x - mean) / sqrt(var + eps) + beta``: the same function
as ``gamma' * x + beta'`` with ``gamma' = gamma / sqrt(var + eps)`` and ``beta' = beta - gamma' * mean``.
A folded layer keeps its parameters (N, the paper's parameter count, is unchanged) and its statistics
become constants - mean 0, variance ``1 - eps`` - that a file stores as one value each
(``netquant.container``). Folding happens before quantization (``netquant.compress.quantize``), so that
quantized BatchNorm parameters are the folded ones; fine-tuning runs in eval mode, where the folded network
is the same function. The network a file decodes to is the eval-mode network: training it further in train
mode needs the unfolded statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from netquant.qmodel import QuantizedModel

STATISTICS = ("running_mean", "running_var")


def layers_of(model: nn.Module) -> dict[str, float]:
    """The BatchNorm layers of ``model`` that can be folded (affine, with running statistics): prefix -> eps."""
    return {prefix: float(module.eps) for prefix, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
            and module.running_mean is not None}


def fold(model: nn.Module, state: dict[str, torch.Tensor],
         importance: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict | None]:
    """``state`` (a state_dict of ``model``'s architecture) with every BatchNorm layer folded (see the module
    docstring), and ``importance`` of the folded parameters: the curvature of the loss in ``gamma'`` is
    ``var + eps`` times that in ``gamma`` (``gamma = gamma' * sqrt(var + eps)``), in ``beta'`` the same as in
    ``beta``. Quantizing the folded values is then weighted as the unfolded ones were."""
    state, importance = dict(state), None if importance is None else dict(importance)
    for prefix, eps in layers_of(model).items():
        gamma, beta, mean, var = (state[f"{prefix}.{key}"] for key in ("weight", "bias", *STATISTICS))
        spread = var.double() + eps
        scale = gamma.double() / spread.sqrt()
        state[f"{prefix}.weight"] = scale.to(gamma.dtype)
        state[f"{prefix}.bias"] = (beta.double() - scale * mean.double()).to(beta.dtype)
        state[f"{prefix}.running_mean"] = torch.zeros_like(mean)
        state[f"{prefix}.running_var"] = torch.full_like(var, 1.0 - eps)
        if importance is not None and f"{prefix}.weight" in importance:
            h = importance[f"{prefix}.weight"]
            importance[f"{prefix}.weight"] = (h.double() * spread.to(h.device)).to(h.dtype)
    return state, importance


def reestimate(model: nn.Module, qmodel: QuantizedModel, batches, *, unfolded: dict | None = None,
               device: str = "cpu") -> QuantizedModel:
    """``qmodel`` with the BatchNorm running statistics of its network measured again: the average over
    ``batches`` ((inputs, targets) pairs) of train-mode batch statistics, no parameter changed.
    Quantization moves every layer's outputs; statistics measured on the quantized network match them.
    Draw ``batches`` as the network was trained (its augmentation): the stored statistics are those of
    training data as training saw it (ResNet-32 measured on unaugmented images loses 2.4 points).

    ``unfolded``: the state_dict the folded ``qmodel`` was made from (:func:`fold`). Its layers then
    compute ``gamma * (x - mean') / sqrt(var' + eps) + beta`` with the original ``gamma``, ``beta`` and the
    measured statistics, expressed around the folded parameters (which stay as quantized): the stored
    statistics are ``mean' - mean * s`` and ``s^2 - eps`` with ``s = sqrt(var' + eps) / sqrt(var + eps)``.
    """
    model.load_state_dict(qmodel.state_dict())
    model.to(device)
    if unfolded is not None:  # the forward passes run the network as trained: gamma, beta unfolded
        with torch.no_grad():
            for prefix, eps in layers_of(model).items():
                module = model.get_submodule(prefix)
                mean, var = (unfolded[f"{prefix}.{key}"].to(module.weight) for key in STATISTICS)
                folded_gamma = module.weight.clone()
                module.weight.mul_((var + eps).sqrt())
                module.bias.add_(folded_gamma * mean)
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
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    if unfolded is not None:
        for prefix, eps in layers_of(model).items():
            mean, var = (unfolded[f"{prefix}.{key}"].double() for key in STATISTICS)
            new_mean, new_var = (state[f"{prefix}.{key}"].double() for key in STATISTICS)
            scale = (new_var + eps).sqrt() / (var + eps).sqrt()
            state[f"{prefix}.running_mean"] = (new_mean - mean * scale).float()
            state[f"{prefix}.running_var"] = (scale**2 - eps).float()
    passthrough = {name: (state[name].numpy().astype(np.asarray(value).dtype)
                          if name.rsplit(".", 1)[-1] in (*STATISTICS, "num_batches_tracked") else value)
                   for name, value in qmodel.passthrough.items()}
    return QuantizedModel(qmodel.codebooks, qmodel.tensors, passthrough, qmodel.order, qmodel.param_names,
                          network=dict(qmodel.network))
