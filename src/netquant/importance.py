"""Per-parameter importance for Hessian-weighted quantization.

(Longer than most modules: the Gauss-Newton estimators' two backends share the sampling, the memory
budget and the floor, which read best together; Becker & Le Cun's estimator is in diagonal_backprop.)

The paper weights each parameter's quantization error by h_ii, the diagonal of the Hessian of the
training loss (mean cross-entropy), or alternatively by the square root of Adam's second-moment estimate.

``hessian_diagonal`` estimators (``estimator=``):

- ``"ggn"`` (default): the exact diagonal of the Gauss-Newton matrix
  G = (1/n) sum_n J_n^T H_n J_n, with J_n the Jacobian of the logits of sample n with respect to the
  parameters and H_n = diag(p_n) - p_n p_n^T the Hessian of the cross-entropy with respect to the logits.
  This is the quantity the Becker & Le Cun (1988) diagonal back-propagation targets (that method is exact
  for the softmax cross-entropy output layer and drops off-diagonal terms deeper in the network; here
  nothing is dropped). With H_n = sum_c r_c r_c^T, r_c = sqrt(p_c) (e_c - p):
  diag(G) = (1/n) sum_n sum_c (J_n^T r_c)^2, the squared per-sample vector-Jacobian products of C rows
  (C = number of classes). Cost: one forward and C backward passes per sample.
- ``"becker-lecun"``: the paper's estimator, the diagonal back-propagation of Le Cun (1987) / Becker &
  Le Cun (1988) (``netquant.diagonal_backprop``): one forward and one backward pass per batch, an
  approximation of the diagonal above that drops the off-diagonal terms of every layer's curvature (at
  the output too: p (1 - p) instead of diag(p) - p p^T). Exact for the last layer's weights.
- ``"ggn-mc"``: unbiased Monte-Carlo estimate of the same diagonal. Rows (p - e_y) / sqrt(K) for K labels
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

Floor (the treatment of negative or zero curvature): every estimate is clamped to
``max(h, floor * mean(|h|))``, the mean taken over *all* parameters of the model (all layers are quantized
together), so the quantizers receive finite h > 0 and weighted means never divide by zero. ``floor=None``
returns the raw estimate.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from netquant import train
from netquant.diagonal_backprop import backprop_diagonal
from netquant.vocabulary import ESTIMATORS

BACKENDS = ("auto", "modules", "func")

Batch = tuple[torch.Tensor, torch.Tensor]

# Elements of intermediate per-sample tensors held at once, which set the default number of samples per
# step: 2**25 (128 MiB in float32) on the CPU, where larger steps gain nothing; 2**30 (4 GiB) on a GPU,
# which needs large steps to be busy (ResNet-32 on an H200: 15 s per 1,000 samples at 2**25, 0.8 s at 2**30).
_ELEMENTS_BUDGET = 2**25
_ELEMENTS_BUDGET_GPU = 2**30


def hessian_diagonal(
    model: nn.Module,
    batches: Iterable[Batch],
    n_samples: int,
    *,
    estimator: str = "ggn",
    floor: float | None = 1e-8,
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
        estimator: ``"ggn"`` (exact Gauss-Newton diagonal, default), ``"ggn-mc"`` or ``"hutchinson"``;
            see the module docstring.
        floor: relative floor; the result is ``max(h, floor * mean(|h|))`` with the mean over all
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
    if floor is not None and not (floor >= 0 and math.isfinite(floor)):
        raise ValueError(f"floor must be a finite number >= 0 or None, got {floor!r}")
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
            _hutchinson_batch(model, params, x, y, n_probes, generator, total)
    elif estimator == "becker-lecun":
        channels_last = train.use_channels_last(model)

        def accumulate(x: torch.Tensor, y: torch.Tensor) -> None:
            x = train.to_device(x, device, channels_last)
            with _parameters_require_grad(model):
                for name, value in backprop_diagonal(model, x).items():
                    total[name] += value
    else:
        plan: tuple[bool, int, int] | None = None  # (use "modules", samples, rows per step), set on the first batch

        def accumulate(x: torch.Tensor, y: torch.Tensor) -> None:
            nonlocal plan
            if plan is None:
                plan = _plan(model, x[:1], backend, None if estimator == "ggn" else mc_samples, chunk_size)
            use_modules, chunk, row_block = plan
            for start in range(0, len(x), chunk):
                xs = x[start:start + chunk]
                # drawn in float64 on the CPU so the labels do not depend on device or model dtype
                uniforms = torch.rand(len(xs), mc_samples, generator=generator, dtype=torch.float64)
                uniforms = uniforms.to(device=device, dtype=dtype)
                if use_modules:
                    _ggn_modules_chunk(model, xs, uniforms, estimator, row_block, total)
                else:
                    _ggn_func_chunk(model, params, xs, uniforms, estimator, row_block, total)

    was_training = model.training
    model.eval()
    taken = 0
    try:
        with tqdm(total=n_samples, unit="sample", desc=f"hessian ({estimator})", disable=not progress) as bar:
            for x, y in _validated(batches):
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
    return raw if floor is None else apply_floor(raw, floor)


def apply_floor(importance: dict[str, torch.Tensor], floor: float) -> dict[str, torch.Tensor]:
    """Clamp every value to ``floor * mean(|h|)``, the mean over all entries of all tensors.

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
    threshold = floor * abs_sum / count
    return {k: h.clamp(min=threshold) for k, h in importance.items()}


def _validated(batches: Iterable[Batch]) -> Iterator[Batch]:
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(f"batch {i} is not an (inputs, targets) pair")
        x, y = batch
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise ValueError(f"batch {i}: inputs and targets must be tensors")
        if y.dim() != 1 or y.dtype != torch.int64 or len(y) != len(x):
            raise ValueError(
                f"batch {i}: targets must be int64 of shape [B] matching inputs [B, ...]; "
                f"got inputs {tuple(x.shape)}, targets {tuple(y.shape)} {y.dtype}"
            )
        yield x, y


def _rows(prob: torch.Tensor, uniforms: torch.Tensor, estimator: str) -> torch.Tensor:
    """Rows r [..., R, C] with sum_r r r^T = diag(p) - p p^T (exactly, or in expectation over the draws).

    prob [..., C] softmax probabilities; uniforms [..., K] in [0, 1), used by "ggn-mc" to draw K labels by
    inverting the cumulative distribution.
    """
    num_classes = prob.shape[-1]
    if estimator == "ggn":
        eye = torch.eye(num_classes, dtype=prob.dtype, device=prob.device)
        return prob.sqrt().unsqueeze(-1) * (eye - prob.unsqueeze(-2))
    labels = (torch.cumsum(prob, -1).unsqueeze(-2) < uniforms.unsqueeze(-1)).sum(-1).clamp(max=num_classes - 1)
    one_hot = (labels.unsqueeze(-1) == torch.arange(num_classes, device=prob.device)).to(prob.dtype)
    return (prob.unsqueeze(-2) - one_hot) / math.sqrt(uniforms.shape[-1])


def _rule_layers(model: nn.Module) -> list[nn.Module]:
    """The layers the "modules" backend has a per-sample gradient rule for, in module order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, _BatchNorm))
            and list(m.parameters(recurse=False))]


def _modules_backend_obstacle(model: nn.Module, x1: torch.Tensor) -> tuple[str | None, int, list[int]]:
    """Check the model with a one-sample forward pass x1 [1, ...].

    Returns (why the "modules" backend cannot handle the model, or None; number of classes C; numel of
    each rule layer's output).
    """
    layers = _rule_layers(model)
    calls: dict[nn.Module, int] = {}
    output_numels = []

    def count(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls[m] = calls.get(m, 0) + 1
        output_numels.append(output.numel())
        if isinstance(m, nn.Linear) and inputs[0].dim() != 2:
            calls[m] = -1

    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            num_classes = model(x1).shape[-1]
    finally:
        for h in handles:
            h.remove()
    for name, m in model.named_modules():
        if list(m.parameters(recurse=False)) and m not in layers:
            return f"no rule for layer {name!r} of type {type(m).__name__}", num_classes, output_numels
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return f"Conv2d {name!r} has groups, a non-zero padding mode or string padding", num_classes, output_numels
        if m in layers and calls.get(m, 0) != 1:
            problem = "gets an input that is not [B, in]" if calls.get(m) == -1 else "does not run exactly once"
            return f"layer {name!r} {problem} per forward pass", num_classes, output_numels
    owned = [id(p) for m in layers for p in m.parameters(recurse=False)]
    if len(owned) != len(set(owned)):
        return "parameters are shared between layers", num_classes, output_numels
    return None, num_classes, output_numels


def _plan(model: nn.Module, x1: torch.Tensor, backend: str, mc_samples: int | None,
          chunk_size: int | None) -> tuple[bool, int, int]:
    """(use the "modules" backend, samples per step, rows per step) for the "ggn" / "ggn-mc" estimators.

    Steps keep the per-sample intermediates near the elements budget: rows x (layer outputs + Conv2d
    per-sample weight gradients) for "modules", rows x parameters for "func"; rows = C or mc_samples. Many
    classes (AlexNet: 1,000) need several row steps per sample.
    """
    obstacle, num_classes, output_numels = _modules_backend_obstacle(model, x1)
    if backend == "modules" and obstacle:
        raise ValueError(f"backend='modules' cannot handle this model: {obstacle}; use backend='func' or 'auto'")
    use_modules = backend != "func" and obstacle is None
    if use_modules:
        conv_weights = sum(m.weight.numel() for m in _rule_layers(model) if isinstance(m, nn.Conv2d))
        per_row = sum(output_numels) + conv_weights
    else:
        per_row = sum(p.numel() for p in model.parameters())
    budget = _ELEMENTS_BUDGET if x1.device.type == "cpu" else _ELEMENTS_BUDGET_GPU
    rows = mc_samples or num_classes
    row_block = min(rows, max(1, budget // per_row))
    if chunk_size is None:
        chunk_size = max(1, budget // (row_block * per_row))
    return use_modules, chunk_size, row_block


@contextlib.contextmanager
def _parameters_require_grad(model: nn.Module) -> Iterator[None]:
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _ggn_modules_chunk(model: nn.Module, x: torch.Tensor, uniforms: torch.Tensor, estimator: str,
                       row_block: int, total: dict[str, torch.Tensor]) -> None:
    """Add sum over the samples x [B, ...] and rows of the squared per-sample gradients to ``total``."""
    layers = _rule_layers(model)
    saved: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        saved[m] = (inputs[0].detach(), output)
        return output.clone()  # a later in-place op (ReLU(inplace=True)) must not overwrite the saved output

    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with _parameters_require_grad(model), torch.enable_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    rows = _rows(torch.softmax(logits.detach(), -1), uniforms, estimator).transpose(0, 1)  # [R, B, C]
    outputs = [saved[m][1] for m in layers]
    names = {id(p): k for k, p in model.named_parameters()}
    for start in range(0, len(rows), row_block):
        block = rows[start:start + row_block].contiguous()
        grads = torch.autograd.grad(logits, outputs, grad_outputs=block, is_grads_batched=True,
                                    retain_graph=start + row_block < len(rows), allow_unused=True,
                                    materialize_grads=True)
        for m, g in zip(layers, grads):  # g [rows in block, B, *output]
            for p, square in zip(m.parameters(recurse=False), _squared_sample_grads(m, saved[m][0], g)):
                total[names[id(p)]] += square.double()


def _squared_sample_grads(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """sum over rows and samples of squared per-sample gradients of m's parameters, in parameter order.

    a [B, *input] the layer's input, g [R, B, *output] the rows back-propagated to its output.
    """
    if isinstance(m, nn.Linear):
        g2 = g.square().sum(0)  # [B, out]: the per-sample weight gradient g a^T squares to g^2 (a^2)^T
        out = [g2.T @ a.square()]
        return out + [g2.sum(0)] if m.bias is not None else out
    if isinstance(m, nn.Conv2d):
        rows, batch = g.shape[:2]
        unfolded = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, in*kh*kw, positions]
        g_rows = g.transpose(0, 1).reshape(batch, rows * m.out_channels, -1)  # [B, R*out, positions]
        weight_grads = torch.bmm(g_rows, unfolded.transpose(1, 2))  # [B, R*out, in*kh*kw]
        out = [weight_grads.square().sum(0).view(rows, *m.weight.shape).sum(0)]
        return out + [g.sum((3, 4)).square().sum((0, 1))] if m.bias is not None else out
    # BatchNorm in eval mode: y = weight * x_hat + bias with fixed running statistics
    shape = (1, -1) + (1,) * (a.dim() - 2)
    x_hat = (a - m.running_mean.view(shape)) / (m.running_var.view(shape) + m.eps).sqrt()
    spatial = tuple(range(3, g.dim()))
    return [(g * x_hat).sum(spatial).square().sum((0, 1)), g.sum(spatial).square().sum((0, 1))]


def _ggn_func_chunk(model: nn.Module, params: dict[str, torch.Tensor], xs: torch.Tensor,
                    uniforms: torch.Tensor, estimator: str, row_block: int,
                    total: dict[str, torch.Tensor]) -> None:
    """Same as _ggn_modules_chunk with torch.func: vmap over samples of vjp over rows."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def logits(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**p, **buffers}, (x.unsqueeze(0),)).squeeze(0)

    def squared_vjps(p: dict[str, torch.Tensor], x: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
        out, vjp_fn = vjp(lambda q: logits(q, x), p)
        rows = _rows(torch.softmax(out.detach(), -1), u, estimator)
        acc = None
        for start in range(0, rows.shape[0], row_block):
            (grads,) = vmap(vjp_fn)(rows[start:start + row_block])
            squares = {k: g.square().sum(0) for k, g in grads.items()}
            acc = squares if acc is None else {k: acc[k] + squares[k] for k in acc}
        return acc

    per_sample = vmap(squared_vjps, in_dims=(None, 0, 0))(params, xs, uniforms)
    for k, v in per_sample.items():
        total[k] += v.sum(0, dtype=torch.float64)


def _hutchinson_batch(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      n_probes: int, generator: torch.Generator, total: dict[str, torch.Tensor]) -> None:
    """Add sum over probes z of z * (H_batch z) to ``total``, H_batch the Hessian of the summed loss."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        out = functional_call(model, {**leaves, **buffers}, (x,))
        loss = F.cross_entropy(out, y, reduction="sum")
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        for _ in range(n_probes):
            probes = [
                (torch.randint(0, 2, v.shape, generator=generator) * 2 - 1).to(device=v.device, dtype=v.dtype)
                for v in leaves.values()
            ]
            hvps = torch.autograd.grad(grads, list(leaves.values()), grad_outputs=probes, retain_graph=True,
                                       allow_unused=True)
            for k, z, hz in zip(leaves, probes, hvps):
                if hz is not None:
                    total[k] += (z * hz).double()


def adam_second_moments(
    model: nn.Module,
    batches: Iterable[Batch] | Callable[[int], Iterable[Batch]],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    masks: dict[str, torch.Tensor] | None = None,
    bias_correction: bool = True,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Fine-tune ``model`` with Adam and return sqrt of Adam's second-moment estimates (paper section 3.5).

    The model is trained IN PLACE (train mode, mean cross-entropy per batch, ``torch.optim.Adam``); save
    ``model.state_dict()`` afterwards to keep the retrained weights. Its previous train/eval mode is restored.

    Args:
        model: classifier returning logits [B, C].
        batches: either a callable ``epoch -> iterable of (inputs, targets)`` (epoch counts from 0; use it
            to reshuffle with a per-epoch seed) or a re-iterable such as a list or DataLoader, iterated once
            per epoch. Batches are moved to the model's device and dtype.
        epochs / steps: training length; give exactly one. With ``steps`` the epochs are repeated until
            that many optimizer steps were taken.
        lr, betas, eps: Adam's hyper-parameters (no weight decay).
        masks: ``{name: bool tensor}`` (True = kept) for pruned parameters. Pruned entries are set to zero
            at the start, their gradients are zeroed before every step and the mask is re-applied after it,
            so they stay exactly zero; their importance is 0.
        bias_correction: return sqrt(v / (1 - beta2^t)) (v-hat, default) or sqrt(v).
        progress: show a tqdm progress bar over steps.

    Returns:
        (importance, history): importance ``{name: tensor}`` per named parameter (same shape, parameter
        dtype, CPU), zeros for a parameter that never received a gradient; history one dict per epoch
        ``{"epoch", "steps", "samples", "loss", "accuracy"}`` with the epoch's sample-weighted mean
        training loss and accuracy.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs= or steps= for the Adam retraining length")
    length = epochs if epochs is not None else steps
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{'epochs' if epochs is not None else 'steps'} must be a positive integer, got {length!r}")
    named = dict(model.named_parameters())
    first = next(iter(named.values()), None)
    if first is None:
        raise ValueError("the model has no parameters")
    device, dtype = first.device, first.dtype
    masks = _validated_masks(masks or {}, named, device)

    optimizer = torch.optim.Adam(named.values(), lr=lr, betas=betas, eps=eps)
    with torch.no_grad():
        for k, m in masks.items():
            named[k].masked_fill_(~m, 0)

    total_steps = steps
    if total_steps is None and hasattr(batches, "__len__") and not callable(batches):
        total_steps = epochs * len(batches)
    history: list[dict] = []
    step = 0
    was_training = model.training
    model.train()
    try:
        with tqdm(total=total_steps, unit="step", desc="adam", disable=not progress) as bar:
            epoch = 0
            while (epochs is None or epoch < epochs) and (steps is None or step < steps):
                loss_sum, correct, seen = 0.0, 0, 0
                for x, y in _validated(batches(epoch) if callable(batches) else batches):
                    x, y = x.to(device=device, dtype=dtype), y.to(device)
                    out = model(x)
                    loss = F.cross_entropy(out, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    train.masked_step(optimizer, named, masks)
                    step += 1
                    loss_sum += loss.item() * len(y)
                    correct += int((out.argmax(1) == y).sum())
                    seen += len(y)
                    bar.update(1)
                    if steps is not None and step >= steps:
                        break
                if seen == 0:
                    raise ValueError(
                        f"batches yielded no batches in epoch {epoch + 1}; pass a list, a DataLoader or a "
                        "callable epoch -> batches (a one-shot iterator is exhausted after the first epoch)"
                    )
                epoch += 1
                history.append({"epoch": epoch, "steps": step, "samples": seen,
                                "loss": loss_sum / seen, "accuracy": correct / seen})
    finally:
        model.train(was_training)

    beta2 = betas[1]
    importance = {}
    for k, p in named.items():
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            importance[k] = torch.zeros_like(p, device="cpu").detach()
            continue
        v = state["exp_avg_sq"].detach()
        if bias_correction:
            v = v / (1 - beta2 ** float(state["step"]))
        importance[k] = v.sqrt().cpu()
    return importance, history


def _validated_masks(masks: dict[str, torch.Tensor], named: dict[str, torch.Tensor],
                     device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for k, m in masks.items():
        if k not in named:
            raise ValueError(f"mask for {k!r} matches no parameter of the model; parameters: {', '.join(named)}")
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != named[k].shape:
            got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(
                f"mask for {k!r} must be a bool tensor of shape {tuple(named[k].shape)} (True = kept), got {got}"
            )
        out[k] = m.to(device)
    return out


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
