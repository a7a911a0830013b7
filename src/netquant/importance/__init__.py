"""Per-parameter importance for Hessian-weighted quantization.

The paper weights each parameter's quantization error by h_ii, the diagonal of the Hessian of the
training loss (mean cross-entropy), or alternatively by the square root of Adam's second-moment estimate.

``hessian_diagonal`` estimators (``estimator=``):

- ``"ggn"``: the exact diagonal of the Gauss-Newton matrix
  G = (1/n) sum_n J_n^T H_n J_n, with J_n the Jacobian of the logits of sample n with respect to the
  parameters and H_n = diag(p_n) - p_n p_n^T the Hessian of the cross-entropy with respect to the logits.
  This is the quantity the Becker & Le Cun (1988) diagonal back-propagation targets (that method is exact
  for the softmax cross-entropy output layer and drops off-diagonal terms deeper in the network; here
  nothing is dropped). With H_n = sum_c r_c r_c^T, r_c = sqrt(p_c) (e_c - p):
  diag(G) = (1/n) sum_n sum_c (J_n^T r_c)^2, the squared per-sample vector-Jacobian products of C rows
  (C = number of classes). Cost: one forward and C backward passes per sample.
- ``"becker-lecun"``: the paper's estimator, the diagonal back-propagation of Le Cun (1987) / Becker &
  Le Cun (1988) (``netquant.importance.becker_lecun``): one forward and one backward pass per batch, an
  approximation of the diagonal above that drops the off-diagonal terms of every layer's curvature (at
  the output too: p (1 - p) instead of diag(p) - p p^T). Exact for the last layer's weights.
- ``"ggn-mc"`` (default): unbiased Monte-Carlo estimate of the same diagonal. Rows (p - e_y) / sqrt(K) for K labels
  y ~ softmax(logits) per sample (``mc_samples``): E_y[(J^T (p - e_y))^2] = diag(J^T H J). K backward
  passes per sample.
- ``"hutchinson"``: unbiased estimate of the diagonal of the *exact* Hessian, E_z[z * Hz] with Rademacher z
  and Hessian-vector products by double back-propagation; ``n_probes`` probes per batch. Independent check.

Two implementations of the squared per-sample vector-Jacobian products (``backend=``):

- ``"modules"``: batched. One forward pass records each layer's input and output; the C rows are
  back-propagated to the layer outputs together (``is_grads_batched``); per-sample parameter gradients are
  formed per layer type and squared: Linear ((g^2)^T a^2, no per-sample matrix at all), Conv2d (unfolded
  inputs, one batched matmul), BatchNorm (eval mode: affine in gamma and beta). Needs every parameter to
  belong to such a layer, used only by that layer's forward, and each layer to run once per forward
  (LeNet-5, ResNet-32, AlexNet; a weight tied into a functional call elsewhere is not detected).
- ``"func"``: generic. ``torch.func`` vmap over samples of vjp over rows; any architecture, but it
  materialises a full per-sample gradient per row (slower where large Linear layers dominate).
- ``"auto"`` (default): ``"modules"`` when the model qualifies, else ``"func"``. Both give the same values
  up to rounding.

For networks that are piecewise linear in each single parameter (ReLU, max-pooling, linear and convolution
layers, eval-mode BatchNorm, residual additions: LeNet-5, ResNet-32 and AlexNet) the second derivative of the
logits with respect to any one parameter is zero almost everywhere, so the exact Hessian diagonal *equals*
the Gauss-Newton diagonal there; the two differ only for smooth nonlinearities (tanh, sigmoid, ...). The
Gauss-Newton diagonal is >= 0 by construction; negative values come only from the noise of the Hutchinson
estimate. Zeros occur for parameters that never influence the loss on the samples (dead units) or where the
softmax is saturated to exactly 0/1 in floating point.

Clamp (the treatment of negative or zero curvature): every estimate is clamped to
``max(h, clamp * mean(|h|))``, the mean taken over *all* parameters of the model (all layers are quantized
together), so the quantizers receive finite h > 0 and weighted means never divide by zero. ``clamp=None``
returns the raw estimate.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from netquant import train
from netquant.importance.adam import adam_second_moments
from netquant.importance.batches import Batch, validated
from netquant.importance.becker_lecun import backprop_diagonal
from netquant.importance.gauss_newton import func_chunk, modules_chunk, parameters_require_grad, step_plan
from netquant.importance.hutchinson import hutchinson_batch
from netquant.vocabulary import DEFAULT_ESTIMATOR, ESTIMATORS

BACKENDS = ("auto", "modules", "func")

__all__ = ["BACKENDS", "ESTIMATORS", "adam_second_moments", "apply_clamp", "backprop_diagonal", "hessian_diagonal",
           "layer_summary"]


def hessian_diagonal(
    model: nn.Module,
    batches: Iterable[Batch],
    n_samples: int,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    clamp: float | None = 1e-8,
    seed: int = 0,
    mc_samples: int = 1,
    n_probes: int = 1,
    backend: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Diagonal of the Hessian of the mean cross-entropy over the first ``n_samples`` samples of ``batches``.

    Args:
        model: a classifier returning logits [B, C]. It is evaluated in eval mode (BatchNorm uses its
            running statistics, dropout is off), so the loss is a sum of independent per-sample terms; its
            previous mode is restored afterwards. Parameters are not modified.
        batches: iterable of (inputs [B, ...] float, targets [B] int64). The caller makes the (seeded)
            choice of samples. Consumption stops as soon as ``n_samples`` samples were taken (a batch that
            overshoots is truncated); fewer samples in total is an error. Inputs are moved to the model's
            device and dtype. Targets are used only by ``"hutchinson"``: the Gauss-Newton matrix of the
            softmax cross-entropy does not depend on them.
        n_samples: number of samples averaged over (the paper uses 50,000 and 1,000).
        estimator: ``"ggn-mc"`` (default), ``"ggn"`` (the exact Gauss-Newton diagonal),
            ``"becker-lecun"`` or ``"hutchinson"``; see the module docstring.
        clamp: relative clamp; the result is ``max(h, clamp * mean(|h|))`` with the mean over all
            parameters. ``None`` returns the raw estimate (Hutchinson's can be negative).
        seed: seeds the label draws of ``"ggn-mc"`` and the probes of ``"hutchinson"``.
        mc_samples: label draws per sample for ``"ggn-mc"``.
        n_probes: Rademacher probes per batch for ``"hutchinson"``.
        backend: ``"auto"``, ``"modules"`` or ``"func"`` for ``"ggn"`` / ``"ggn-mc"``; see the module docstring.
        chunk_size: samples processed together by ``"ggn"`` / ``"ggn-mc"``; default: as many as keep the
            intermediate per-sample tensors near 128 MiB on the CPU, 4 GiB on a GPU (float32). Changes only
            rounding, speed and memory.
        progress: show a tqdm progress bar over samples.

    Returns:
        ``{name: tensor}`` for every entry of ``model.named_parameters()``, same shape as the parameter,
        in the parameter's dtype, on the CPU. Units: loss per squared parameter unit.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    for name, value in (("n_samples", n_samples), ("mc_samples", mc_samples), ("n_probes", n_probes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if clamp is not None and not (clamp >= 0 and math.isfinite(clamp)):
        raise ValueError(f"clamp must be a finite number >= 0 or None, got {clamp!r}")
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.running_mean is None:
            raise ValueError(
                f"BatchNorm layer {name!r} does not track running statistics, so in eval mode it normalises "
                "with batch statistics and the loss is not a sum over samples; build it with "
                "track_running_stats=True"
            )

    params = {k: v.detach() for k, v in model.named_parameters()}
    if not params:
        raise ValueError("the model has no parameters")
    first = next(iter(params.values()))
    device, dtype = first.device, first.dtype
    total = {k: torch.zeros(v.shape, dtype=torch.float64, device=device) for k, v in params.items()}
    generator = torch.Generator().manual_seed(seed)

    if estimator == "hutchinson":
        def accumulate(x: torch.Tensor, y: torch.Tensor) -> None:
            hutchinson_batch(model, params, x, y, n_probes, generator, total)
    elif estimator == "becker-lecun":
        channels_last = train.use_channels_last(model)

        def accumulate(x: torch.Tensor, y: torch.Tensor) -> None:
            x = train.to_device(x, device, channels_last)
            with parameters_require_grad(model):
                for name, value in backprop_diagonal(model, x).items():
                    total[name] += value
    else:
        plan: tuple[bool, int, int] | None = None  # (use "modules", samples, rows per step), set on the first batch

        def accumulate(x: torch.Tensor, y: torch.Tensor) -> None:
            nonlocal plan
            if plan is None:
                plan = step_plan(model, x[:1], backend, None if estimator == "ggn" else mc_samples, chunk_size)
            use_modules, chunk, row_block = plan
            for start in range(0, len(x), chunk):
                xs = x[start:start + chunk]
                # drawn in float64 on the CPU so the labels do not depend on device or model dtype
                uniforms = torch.rand(len(xs), mc_samples, generator=generator, dtype=torch.float64)
                uniforms = uniforms.to(device=device, dtype=dtype)
                if use_modules:
                    modules_chunk(model, xs, uniforms, estimator, row_block, total)
                else:
                    func_chunk(model, params, xs, uniforms, estimator, row_block, total)

    was_training = model.training
    model.eval()
    taken = 0
    try:
        with tqdm(total=n_samples, unit="sample", desc=f"hessian ({estimator})", disable=not progress) as bar:
            for x, y in validated(batches):
                if len(x) == 0:
                    continue
                take = min(len(x), n_samples - taken)
                accumulate(x[:take].to(device=device, dtype=dtype), y[:take].to(device))
                taken += take
                bar.update(take)
                if taken == n_samples:
                    break
    finally:
        model.train(was_training)
    if taken < n_samples:
        raise ValueError(
            f"batches yielded only {taken} samples but n_samples={n_samples}; "
            "pass more batches or lower n_samples"
        )
    scale = 1.0 / (n_samples * (n_probes if estimator == "hutchinson" else 1))
    raw = {k: (v * scale).to(dtype=params[k].dtype).cpu() for k, v in total.items()}
    return raw if clamp is None else apply_clamp(raw, clamp)


def apply_clamp(importance: dict[str, torch.Tensor], clamp: float) -> dict[str, torch.Tensor]:
    """Clamp every value to ``clamp * mean(|h|)``, the mean over all entries of all tensors.

    Raises ValueError if any value is not finite or if all values are zero (no curvature anywhere means the
    estimate is unusable, not that every parameter is unimportant).
    """
    for name, h in importance.items():
        if not torch.isfinite(h).all():
            raise ValueError(f"importance of {name!r} has non-finite values; check the model and inputs")
    abs_sum = sum(float(h.double().abs().sum()) for h in importance.values())
    count = sum(h.numel() for h in importance.values())
    if abs_sum == 0:
        raise ValueError(
            "the importance estimate is zero for every parameter (a softmax saturated to exactly 0/1 on "
            "every sample, or too few samples/label draws); use more samples or the 'ggn' estimator"
        )
    threshold = clamp * abs_sum / count
    return {k: h.clamp(min=threshold) for k, h in importance.items()}


def layer_summary(importance: dict[str, torch.Tensor],
                  masks: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Per-tensor statistics of an importance dict, to see which layers are sensitive.

    With ``masks`` (True = kept) the statistics cover the kept entries only (pruned ones are not quantized).
    Returns one dict per tensor, in order: ``{"name", "numel", "kept", "mean", "median", "min", "max"}``;
    the statistics are None for a tensor with no kept entry.
    """
    masks = masks or {}
    rows = []
    for name, h in importance.items():
        values = h.detach().flatten().double().cpu()
        if name in masks:
            values = values[masks[name].flatten().cpu()]
        stats = (
            {"mean": float(values.mean()), "median": float(values.median()), "min": float(values.min()),
             "max": float(values.max())}
            if values.numel() else {"mean": None, "median": None, "min": None, "max": None}
        )
        rows.append({"name": name, "numel": h.numel(), "kept": values.numel(), **stats})
    return rows
