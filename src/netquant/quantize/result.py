"""What a quantizer returns: :class:`QuantizationResult`, with its statistics computed from the float32
centres actually returned (per weight: distortion, Hessian-weighted distortion, label entropy, objective)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netquant.coding import entropy_bits

@dataclass
class QuantizationResult:
    """Outcome of one quantizer run over a weight vector of n entries.

    Attributes
    ----------
    method : str
    centers : float32 [k], ascending; every centre is used by at least one weight.
    labels : int32 [n], index into ``centers``.
    distortion : float, ``1/n sum (w - c[l])^2``.
    weighted_distortion : float, ``1/n sum h (w - c[l])^2`` (h = 1 without importance).
    entropy : float, bits per weight of the label histogram.
    objective : float, weighted_distortion, plus ``lam * entropy`` for ecsq and dp-ecsq.
    clusters_used : int, ``len(centers)``.
    iterations : int, Lloyd / Algorithm 1 iterations (0 for closed-form methods and the DP solvers).
    history : float64 [iterations], the objective after each iteration (computed in float64 before the
        centres are rounded to float32); non-increasing.
    lam, step : float or None, the rate parameter used (ecsq/dp-ecsq and uniform).
    """

    method: str
    centers: np.ndarray
    labels: np.ndarray
    distortion: float
    weighted_distortion: float
    entropy: float
    objective: float
    clusters_used: int
    iterations: int = 0
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lam: float | None = None
    step: float | None = None

    @property
    def counts(self) -> np.ndarray:
        """int64 [k]: number of weights per centre."""
        return np.bincount(self.labels, minlength=len(self.centers))

    @property
    def values(self) -> np.ndarray:
        """float32 [n]: the quantized weights ``centers[labels]``."""
        return self.centers[self.labels]



def make_result(method, w, h, centers, labels, *, lam=None, step=None, history=None) -> QuantizationResult:
    centers = np.asarray(centers, np.float32)
    labels = np.asarray(labels, np.int32)
    if np.any(np.diff(centers) < 0):  # number the clusters in ascending order of their centres
        order = np.argsort(centers, kind="stable")
        rank = np.empty(order.size, np.int32)
        rank[order] = np.arange(order.size)
        centers, labels = centers[order], rank[labels]
    n = w.shape[0]
    if n:
        error = (w - centers.astype(np.float64)[labels]) ** 2
        distortion = float(error.mean())
        weighted = distortion if h is None else float(np.dot(h, error) / n)
    else:
        distortion = weighted = 0.0
    entropy = entropy_bits(np.bincount(labels, minlength=len(centers)))
    objective = weighted + (lam * entropy if method in ("ecsq", "dp-ecsq") else 0.0)
    history = np.zeros(0) if history is None else np.asarray(history, np.float64)
    return QuantizationResult(
        method=method,
        centers=centers,
        labels=labels,
        distortion=distortion,
        weighted_distortion=weighted,
        entropy=entropy,
        objective=objective,
        clusters_used=int(len(centers)),
        iterations=int(history.size),
        history=history,
        lam=None if lam is None else float(lam),
        step=None if step is None else float(step),
    )
