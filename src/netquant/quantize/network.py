"""Quantizing a network: which of its parameters, their pruning masks, BatchNorm folded first, and the
rate as the method's own parameter (``k``, ``step`` or ``lam``: :func:`netquant.quantize.rate_parameter`)
or, through :func:`network_rate_grid`, as the average codeword lengths the method aims at.

Which parameters are quantized (``include``): ``"weights"`` (every parameter with two or more dimensions:
convolutions, linear layers, embeddings), ``"weights+biases"``, or ``"all"`` (BatchNorm's affine
parameters too, as the paper counts N). Everything else is stored as is. Pruned weights are the given
masks' False positions or, with ``pruned="zeros"``, the exact zeros of a tensor that has at least
:data:`PRUNED_FRACTION` of them: coded as positions, never quantized, exactly 0 after decoding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from netquant import batchnorm
from netquant.qmodel import QuantizedModel
from netquant.quantize.model import kept_values, quantize_model
from netquant.quantize.rates import rate_grid
from netquant.quantize.vector import method_options

INCLUDE = ("weights", "weights+biases", "all")
PRUNED_FRACTION = 0.10  # a tensor with at least this fraction of exact zeros is taken as pruned


def quantized_names(model: nn.Module, include: str = "weights") -> list[str]:
    """The parameters that ``include`` quantizes (see the module docstring)."""
    if include not in INCLUDE:
        raise ValueError(f"include must be one of {', '.join(INCLUDE)}, got {include!r}")
    bn = {f"{m}.{p}" for m, module in model.named_modules()
          if isinstance(module, nn.modules.batchnorm._NormBase) for p, _ in module.named_parameters(recurse=False)}
    names = []
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            continue
        if p.dim() >= 2 or include == "all" or (include == "weights+biases" and name.endswith("bias")
                                                 and name not in bn):
            names.append(name)
    return names


def pruning_masks(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Masks (True = kept) of the tensors among ``names`` that look pruned: >= 10% exact zeros."""
    params = dict(model.named_parameters())
    masks = {}
    for name in names:
        zero = params[name].detach() == 0
        if zero.float().mean() >= PRUNED_FRACTION:
            masks[name] = ~zero
    return masks


def quantized_and_masks(model: nn.Module, include: str, pruned: str = "zeros",
                        masks: dict | None = None) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The parameters ``include`` quantizes and the masks of the pruned ones among them: the given ``masks``
    or, with ``pruned="zeros"``, those found from exact zeros."""
    if pruned not in ("zeros", "none"):
        raise ValueError(f"pruned must be 'zeros' or 'none', got {pruned!r}")
    names = quantized_names(model, include)
    if masks is None:
        masks = pruning_masks(model, names) if pruned == "zeros" else {}
    return names, {name: mask for name, mask in masks.items() if name in names}


def check_importance(importance: dict[str, torch.Tensor] | None, names: list[str]) -> None:
    missing = [name for name in names if importance is not None and name not in importance]
    if missing:
        raise ValueError(f"the importance has no entry for {missing[0]!r} ({len(missing)} quantized parameters "
                         "missing); give one tensor per quantized parameter (compress.importance returns them), "
                         "or importance=None")


def values_to_quantize(model: nn.Module, importance, fold_batchnorm: bool = True):
    """The model's state and importance as they are quantized: BatchNorm folded (:mod:`netquant.batchnorm`)
    or not."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return batchnorm.fold(model, state, importance) if fold_batchnorm else (state, importance)


def network_rate_grid(model: nn.Module, importance: dict[str, torch.Tensor] | None, *, method: str, names: list[str],
              masks: dict, bits_min: float, bits_max: float, points: int, fold_batchnorm: bool = True,
              zero_center: bool = True) -> list[float]:
    """The method's rate values (k, step or lam) for average codeword lengths from ``bits_min`` to
    ``bits_max`` (``points`` of them), over the kept values that :func:`quantize_network` quantizes."""
    state, importance = values_to_quantize(model, importance, fold_batchnorm)
    h = None if importance is None else kept_values(importance, names, masks)
    return rate_grid(method, kept_values(state, names, masks), h, bits_min=bits_min, bits_max=bits_max,
                         points=points, zero_center=zero_center).tolist()


def quantize_network(model: nn.Module, importance: dict[str, torch.Tensor] | None, *, method: str,
                     rate: dict[str, float],
                     scope: str = "all", include: str = "weights", pruned: str = "zeros",
                     masks: dict[str, torch.Tensor] | None = None, seed: int = 0, network: dict | None = None,
                     fold_batchnorm: bool = True, options: dict | None = None, return_results: bool = False):
    """Quantize ``model``'s parameters (``include``) with ``method`` at ``rate``: the method's own rate
    parameter and its value (``{rate_parameter(method): value}``), or for uniform ``{"k": bins}``. ``options``: a config's ``quantize.options`` as they are (mapped to the method by
    :func:`netquant.quantize.method_options`). ``network``: a description stored in the file, to which the
    method and rate are added (``quantization``). With ``return_results``, also each codebook's
    :class:`netquant.quantize.QuantizationResult`."""
    names, masks = quantized_and_masks(model, include, pruned, masks)
    check_importance(importance, names)
    state, importance = values_to_quantize(model, importance, fold_batchnorm)
    quantized = quantize_model(state, param_names=names, masks=masks, importance=importance, method=method,
                               scope=scope, parameters=[n for n, _ in model.named_parameters()], seed=seed,
                               return_results=return_results, **{**method_options(method, options or {}), **rate})
    qmodel: QuantizedModel = quantized[0] if return_results else quantized
    qmodel.network = {**(network or {}), "quantization": {"method": method, "scope": scope, "include": include,
                                                          "fold_batchnorm": fold_batchnorm, **rate}}
    return quantized if return_results else qmodel
