"""Applying a quantizer to a model: all layers with one codebook (the paper) or one per layer.

Pruned elements get the label ``PRUNED``, decode to exactly 0 and are neither quantized nor a cluster.
A shared value of exactly 0 (``uniform-zero``'s zero bin) is the pruned value: its members are pruned too.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor
from netquant.quantize.checks import check_importance, to_numpy
from netquant.quantize.result import QuantizationResult
from netquant.quantize.vector import quantize

def quantize_model(
    state_dict: Mapping[str, torch.Tensor | np.ndarray],
    *,
    param_names: Sequence[str],
    masks: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    importance: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    method: str,
    scope: str = "all",
    parameters: Sequence[str] | None = None,
    return_results: bool = False,
    **quantize_kwargs,
) -> QuantizedModel | tuple[QuantizedModel, list[QuantizationResult]]:
    """Quantize the entries ``param_names`` of a state_dict and return the quantized model.

    Parameters
    ----------
    state_dict : name -> tensor or array, in the network's key order (kept as ``order``).
    param_names : names of the floating-point entries to quantize (the workflow's default: every
        nn.Parameter, as the paper counts N).
    masks : name -> bool tensor of the same shape, True = kept. Pruned elements are excluded from
        quantization, get label ``PRUNED`` and decode to exactly 0. Masks of other entries are ignored.
    importance : name -> tensor of the same shape (>= 0, finite), one for every name in
        ``param_names``; None for plain (unweighted) importance.
    method : quantization method, see :func:`quantize`.
    scope : "all" = one codebook for all tensors together (the paper); "layer" = one codebook per tensor
        (Deep Compression).
    parameters : names of all nn.Parameters of the network (quantized or not), stored as the
        QuantizedModel's ``param_names`` so that its ``n_params`` is the paper's N. Default: ``param_names``.
        Must contain every name of ``param_names``.
    return_results : also return the :class:`QuantizationResult` of each codebook (in codebook order).
    **quantize_kwargs : passed to :func:`quantize` (k, step, lam, init, ...).

    Returns
    -------
    QuantizedModel, or (QuantizedModel, list of QuantizationResult) with ``return_results=True``.
    Every entry not in ``param_names`` goes to ``passthrough`` unchanged as a numpy array. With
    ``scope="all"`` and every element pruned the single codebook is empty.
    """
    if scope not in ("all", "layer"):
        raise ValueError(f"scope must be 'all' (one codebook, the paper) or 'layer' (one per tensor), got {scope!r}")
    param_names = list(param_names)
    if len(set(param_names)) != len(param_names):
        raise ValueError("param_names contains duplicates")
    missing = [name for name in param_names if name not in state_dict]
    if missing:
        raise ValueError(f"param_names not in the state_dict: {missing}")
    parameters = param_names if parameters is None else list(parameters)
    outside = [name for name in parameters if name not in state_dict]
    if outside:
        raise ValueError(f"parameters not in the state_dict: {outside}")
    not_listed = [name for name in param_names if name not in set(parameters)]
    if not_listed:
        raise ValueError(f"param_names must be a subset of parameters; missing from parameters: {not_listed}")
    masks = masks or {}
    if importance is not None:
        absent = [name for name in param_names if name not in importance]
        if absent:
            raise ValueError(f"importance has no entry for {absent}; give one tensor per quantized name")

    arrays = {name: to_numpy(value) for name, value in state_dict.items()}
    kept_values, kept_importance, kept_masks = {}, {}, {}
    for name in param_names:
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"{name}: only floating-point entries can be quantized, got dtype {values.dtype}")
        flat = values.reshape(-1)
        kept = np.ones(flat.size, bool)
        if name in masks:
            mask = to_numpy(masks[name])
            if mask.shape != values.shape:
                raise ValueError(f"{name}: mask shape {mask.shape} differs from the tensor's {values.shape}")
            kept = mask.reshape(-1).astype(bool)
        kept_masks[name] = kept
        kept_values[name] = flat[kept]
        if importance is not None:
            imp = to_numpy(importance[name])
            if imp.shape != values.shape:
                raise ValueError(f"{name}: importance shape {imp.shape} differs from the tensor's {values.shape}")
            try:
                kept_importance[name] = check_importance(imp.reshape(-1)[kept], int(kept.sum()))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

    groups = [param_names] if scope == "all" else [[name] for name in param_names]
    codebooks, tensors, results = [], {}, []
    for book, names in enumerate(groups):
        w = np.concatenate([kept_values[name] for name in names]) if names else np.zeros(0)
        h = np.concatenate([kept_importance[name] for name in names]) if importance is not None and names else None
        result = quantize(w, h, method=method, **quantize_kwargs)
        results.append(result)
        centers, book_labels = _zero_value_pruned(result.centers, result.labels)
        codebooks.append(centers)
        offset = 0
        for name in names:
            kept = kept_masks[name]
            labels = np.full(kept.size, PRUNED, np.int32)
            count = int(kept.sum())
            labels[kept] = book_labels[offset : offset + count]
            offset += count
            tensors[name] = QuantizedTensor(arrays[name].shape, book, labels)

    passthrough = {name: np.array(arrays[name], copy=True) for name in arrays if name not in tensors}
    model = QuantizedModel(codebooks, tensors, passthrough, list(state_dict.keys()), list(parameters))
    return (model, results) if return_results else model


def _zero_value_pruned(centers: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codebook without a centre of exactly 0, whose members get ``PRUNED`` (the others renumbered)."""
    zero = centers == 0
    if not zero.any():
        return centers, labels
    renumber = np.where(zero, PRUNED, np.cumsum(~zero) - 1).astype(np.int32)
    return centers[~zero], renumber[labels]


def kept_values(tensors: Mapping[str, torch.Tensor], names: Sequence[str],
                masks: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The unpruned entries of ``names`` (``masks``: True = kept), concatenated in order, as float64: the
    vector the quantizers see with all layers together (e.g. for :func:`netquant.quantize.rate_grid`)."""
    return torch.cat([tensors[n].detach().flatten()[masks[n].flatten()] if n in masks
                      else tensors[n].detach().flatten() for n in names]).double().numpy()
