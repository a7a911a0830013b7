"""Magnitude pruning (Han et al. 2015): remove the smallest-magnitude weights, then retrain with masks held.

The target ``sparsity`` is the fraction of the prunable weights removed (paper: LeNet 0.91, ResNet-32 0.80,
AlexNet 0.89). ``scope="global"`` uses one magnitude threshold over all prunable tensors (so sensitive layers
with large weights keep more); ``scope="layer"`` removes the same fraction from every tensor.
Iterative pruning reaches the target in ``steps`` stages whose kept fractions fall geometrically.
"""

from __future__ import annotations

import torch
from torch import nn

PRUNABLE = ("weights", "all")


def prunable_names(model: nn.Module, which: str = "weights") -> list[str]:
    """Names of the parameters that may be pruned: "weights" = conv/linear weight tensors (dim > 1), "all"."""
    if which not in PRUNABLE:
        raise ValueError(f"unknown prunable set {which!r}; expected one of {', '.join(PRUNABLE)}")
    return [n for n, p in model.named_parameters() if which == "all" or p.dim() > 1]


def sparsity_schedule(target: float, steps: int) -> list[float]:
    """Sparsities of ``steps`` iterative stages ending at ``target``; kept fractions fall geometrically."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {target}")
    if steps < 1:
        raise ValueError(f"pruning needs at least one step, got {steps}")
    kept = 1.0 - target
    return [1.0 - kept ** ((s + 1) / steps) for s in range(steps)]


def prunable_sparsity(target: float, counts: str, n_parameters: int, n_prunable: int) -> float:
    """The sparsity of the prunable weights that removes ``target`` of what ``counts`` names: "prunable"
    (the fraction is of the prunable weights) or "all" (of all parameters, the paper's N; the unprunable
    ones - biases, BatchNorm - stay, so the prunable weights lose a little more)."""
    if counts == "prunable":
        return target
    if counts != "all":
        raise ValueError(f"counts must be 'prunable' or 'all', got {counts!r}")
    kept_prunable = (1.0 - target) * n_parameters - (n_parameters - n_prunable)
    if kept_prunable <= 0:
        raise ValueError(f"sparsity {target} of all {n_parameters} parameters would remove more than the "
                         f"{n_prunable} prunable weights; lower the prune sparsity")
    return 1.0 - kept_prunable / n_prunable


def magnitude_masks(tensors: dict[str, torch.Tensor], sparsity: float, *, scope: str = "global") -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) removing the ``sparsity`` fraction of smallest |w| among ``tensors``.

    Ties at the threshold are broken by position so the kept count is exact.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope == "layer":
        return {n: _keep_largest(t.abs().flatten(), sparsity).view_as(t) for n, t in tensors.items()}
    if scope != "global":
        raise ValueError(f"unknown pruning scope {scope!r}; expected global or layer")
    flat = torch.cat([t.detach().abs().flatten() for t in tensors.values()])
    keep = _keep_largest(flat, sparsity)
    masks, offset = {}, 0
    for name, t in tensors.items():
        masks[name] = keep[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return masks


def _keep_largest(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    n_prune = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    if n_prune:
        order = torch.sort(magnitudes.detach().cpu(), stable=True).indices
        keep[order[:n_prune]] = False
    return keep


def sparsity_report(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Per-parameter counts: size, nonzeros (and kept by mask), sparsity; one row per parameter."""
    masks = masks or {}
    rows = []
    for name, p in model.named_parameters():
        nonzero = int((p != 0).sum())
        kept = int(masks[name].sum()) if name in masks else p.numel()
        rows.append({"name": name, "shape": list(p.shape), "size": p.numel(), "nonzeros": nonzero, "kept": kept,
                     "sparsity": 1.0 - kept / p.numel()})
    return rows
