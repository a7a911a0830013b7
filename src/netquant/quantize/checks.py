"""Argument checks shared by the quantizers: one clear error naming the argument and what is allowed."""

from __future__ import annotations

import math

import numpy as np
import torch

def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()  # bfloat16 / float16 have no numpy dtype; float32 holds them exactly
        return value.numpy()
    return np.asarray(value)


def as_vector(value, name: str) -> np.ndarray:
    array = to_numpy(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}; pass a flattened vector (.reshape(-1))")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def check_importance(h, n: int) -> np.ndarray | None:
    if h is None:
        return None
    h = as_vector(h, "importance h")
    if h.shape[0] != n:
        raise ValueError(f"importance h has {h.shape[0]} entries, the weights have {n}; they must match")
    bad = ~np.isfinite(h)
    if bad.any():
        raise ValueError(
            f"importance h has {int(bad.sum())} NaN/inf entries; recompute it or replace them before quantizing"
        )
    negative = h < 0
    if negative.any():
        raise ValueError(
            f"importance h has {int(negative.sum())} negative entries (min {h.min():.3g}); importance must be >= 0 "
            "- clamp negative Hessian entries to 0 first (netquant.importance does this)"
        )
    return h


def check_rate_arguments(method: str, k, step, lam) -> int | None:
    k_given = method in ("ecsq", "uniform", "uniform-zero") and k is not None
    if method in ("kmeans", "hwkmeans", "dp-kmeans") or k_given:
        if method in ("kmeans", "hwkmeans", "dp-kmeans") and k is None:
            raise ValueError(f"method {method!r} needs k (the number of clusters)")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
    if method in ("uniform", "uniform-zero"):
        if (step is None) == (k is None):
            raise ValueError(f"method {method!r} needs exactly one of step (bin width) or k (number of bins)")
        if step is not None and not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
    if method in ("ecsq", "dp-ecsq"):
        if lam is None:
            raise ValueError(f"method {method!r} needs lam (the Lagrange multiplier of D + lam*H)")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return k
