"""The Gauss-Newton diagonal (``ggn``) and its Monte-Carlo estimate (``ggn-mc``): squared per-sample
vector-Jacobian products, by layer rules (``modules``) or by ``torch.func`` (``func``); see
:mod:`netquant.importance`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap
from torch.nn.modules.batchnorm import _BatchNorm

# Elements of intermediate per-sample tensors held at once, which set the default number of samples per
# step: 2**25 (128 MiB in float32) on the CPU, where larger steps gain nothing; 2**30 (4 GiB) on a GPU,
# which needs large steps to be busy (ResNet-32 on an H200: 15 s per 1,000 samples at 2**25, 0.8 s at 2**30).
_ELEMENTS_BUDGET = 2**25
_ELEMENTS_BUDGET_GPU = 2**30


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


def step_plan(model: nn.Module, x1: torch.Tensor, backend: str, mc_samples: int | None,
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
def parameters_require_grad(model: nn.Module) -> Iterator[None]:
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def modules_chunk(model: nn.Module, x: torch.Tensor, uniforms: torch.Tensor, estimator: str,
                       row_block: int, total: dict[str, torch.Tensor]) -> None:
    """Add sum over the samples x [B, ...] and rows of the squared per-sample gradients to ``total``."""
    layers = _rule_layers(model)
    saved: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(m: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        saved[m] = (inputs[0].detach(), output)
        return output.clone()  # a later in-place op (ReLU(inplace=True)) must not overwrite the saved output

    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with parameters_require_grad(model), torch.enable_grad():
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


def func_chunk(model: nn.Module, params: dict[str, torch.Tensor], xs: torch.Tensor,
                    uniforms: torch.Tensor, estimator: str, row_block: int,
                    total: dict[str, torch.Tensor]) -> None:
    """Same as modules_chunk with torch.func: vmap over samples of vjp over rows."""
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
