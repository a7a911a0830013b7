"""The diagonal Hessian by back-propagation of second derivatives (Le Cun 1987; Becker & Le Cun 1988).

This is the paper's own estimator. With a_j a unit's input to its nonlinearity (the output of a
convolution, linear or BatchNorm layer) and D(a) = d^2 L / d a^2, the recursion drops every off-diagonal
term: a layer's input x receives D(x) = sum_j J_ji^2 D(a_j), the squared local Jacobian transposed, and a
weight w_ji gets h = D(a_j) x_i^2. At the output, D(z) = p (1 - p), the diagonal of the softmax
cross-entropy's Hessian with respect to the logits. Units that feed several others (residual
connections) add the curvature of each path. For ReLU and max-pooling the local Jacobian is 0 or 1, and
their f'' is 0 almost everywhere, so no term of the original method is lost there.

It costs one forward and one backward pass per batch, like a gradient. Implementation: the ordinary
forward pass, inside a ``TorchFunctionMode`` that swaps each layer with weights (conv, linear, eval-mode
BatchNorm) and each average pooling for an autograd function whose backward applies the squared Jacobian
and forms h; pooling by maximum, ReLU, slicing, padding, reshaping and additions keep their own backward,
which is already their squared Jacobian. The backward of the logits with D(z) then accumulates h for every
parameter at once, summed over the batch.

Networks with smooth nonlinearities (tanh, sigmoid, GELU ...) would need Becker & Le Cun's f'' term,
which this does not compute: they are refused, as are grouped or transposed convolutions and train-mode
BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_SMOOTH = {F.sigmoid, torch.sigmoid, F.tanh, torch.tanh, F.gelu, F.silu, F.elu, F.selu, F.softplus,
           F.mish, F.hardswish, F.hardsigmoid, F.logsigmoid, F.softmax, F.log_softmax, torch.softmax,
           torch.exp, torch.log, F.conv_transpose2d, F.conv1d, F.conv3d}


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, d):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        # one convolution backward on (x^2, w^2): its input gradient is the squared Jacobian transposed
        # applied to D, its weight gradient sum D x^2
        gx, gw, _ = torch.ops.aten.convolution_backward(
            d, x * x, weight * weight, None, _pair(stride), _pair(padding), _pair(dilation), False, [0, 0],
            groups, [ctx.needs_input_grad[0], True, False])
        gb = d.sum((0, 2, 3)) if has_bias else None
        return gx, gw, gb, None, None, None, None


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, d):
        x, weight = ctx.saved_tensors
        gx = d @ (weight * weight)
        gw = d.reshape(-1, d.shape[-1]).T @ (x * x).reshape(-1, x.shape[-1])
        gb = d.reshape(-1, d.shape[-1]).sum(0) if ctx.has_bias else None
        return gx, gw, gb


class _BatchNormEval(torch.autograd.Function):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with the stored statistics."""

    @staticmethod
    def forward(ctx, x, mean, var, gamma, beta, eps):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        inv_std = (var + eps).rsqrt().view(shape)
        x_hat = (x - mean.view(shape)) * inv_std
        ctx.save_for_backward(x_hat, inv_std, gamma)
        ctx.shape = shape
        ctx.has = (gamma is not None, beta is not None)
        out = x_hat
        if gamma is not None:
            out = out * gamma.view(shape)
        if beta is not None:
            out = out + beta.view(shape)
        return out

    @staticmethod
    def backward(ctx, d):
        x_hat, inv_std, gamma = ctx.saved_tensors
        scale = inv_std if gamma is None else inv_std * gamma.view(ctx.shape)
        dims = [0] + list(range(2, d.dim()))
        g_gamma = (d * x_hat * x_hat).sum(dims) if ctx.has[0] else None
        g_beta = d.sum(dims) if ctx.has[1] else None
        return d * scale * scale, None, None, g_gamma, g_beta, None


class _AveragePool(torch.autograd.Function):
    """Average pooling: the local Jacobian is 1/k, its square 1/k^2, so D is pooled back divided by k."""

    @staticmethod
    def forward(ctx, x, pool, k):
        ctx.save_for_backward(x)
        ctx.pool, ctx.k = pool, k
        return pool(x)

    @staticmethod
    def backward(ctx, d):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(ctx.pool(probe), probe, d / ctx.k)
        return gx, None, None


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [int(value), int(value)]


def _uniform_window(size: int, out: int) -> int | None:
    """The window length of adaptive average pooling from ``size`` to ``out`` when every window has the
    same length (size divisible by out), else None."""
    return size // out if size % out == 0 else None


class _Curvature(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d):
            return _conv2d(*args, **kwargs)
        if func is F.linear:
            return _linear(*args, **kwargs)
        if func is F.batch_norm:
            return _batch_norm(*args, **kwargs)
        if func is F.adaptive_avg_pool2d:
            x, out = args[0], _pair(args[1] if len(args) > 1 else kwargs["output_size"])
            out = [x.shape[-2] if o is None else o for o in out]
            windows = [_uniform_window(x.shape[-2], out[0]), _uniform_window(x.shape[-1], out[1])]
            if None in windows:
                raise ValueError(f"becker-lecun: adaptive average pooling from {tuple(x.shape[-2:])} to "
                                 f"{tuple(out)} has windows of unequal size; use estimator 'ggn'")
            return _AveragePool.apply(x, lambda t: F.adaptive_avg_pool2d(t, out), windows[0] * windows[1])
        if func is F.avg_pool2d:
            return _avg_pool2d(*args, **kwargs)
        if func in _SMOOTH:
            raise ValueError(f"becker-lecun: the network uses {getattr(func, '__name__', func)}, a smooth "
                             "nonlinearity whose second-derivative term this estimator does not compute; "
                             "use estimator 'ggn'")
        return func(*args, **kwargs)


def _linear(x, weight, bias=None):
    return _Linear.apply(x, weight, bias)


def _conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        raise ValueError("becker-lecun: string padding of a convolution is not supported; use estimator 'ggn'")
    return _Conv2d.apply(x, weight, bias, stride, padding, dilation, groups)


def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    if training or running_mean is None:
        raise ValueError("becker-lecun: BatchNorm must use stored statistics (eval mode, track_running_stats)")
    return _BatchNormEval.apply(x, running_mean, running_var, weight, bias, eps)


def _avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
    kernel = _pair(kernel_size)
    if _pair(padding) != [0, 0] or ceil_mode or divisor_override is not None:
        raise ValueError("becker-lecun: average pooling with padding, ceil_mode or a divisor is not supported; "
                         "use estimator 'ggn'")
    return _AveragePool.apply(x, lambda t: F.avg_pool2d(t, kernel, stride), kernel[0] * kernel[1])


def backprop_diagonal(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum over the samples of ``x`` [B, ...] of the Becker & Le Cun diagonal, for each named parameter.

    ``model`` must be in eval mode and return logits [B, C]; the loss is the cross-entropy of each sample.
    Returns {name: tensor of the parameter's shape}; a parameter the logits do not depend on gets zeros.
    """
    named = dict(model.named_parameters())
    with _Curvature():
        logits = model(x)
    if logits.dim() != 2:
        raise ValueError(f"becker-lecun: the model must return logits [B, C], got shape {tuple(logits.shape)}")
    p = torch.softmax(logits.detach().double(), dim=1)
    d = (p * (1 - p)).to(logits.dtype)
    used = [n for n, v in named.items() if v.requires_grad]
    grads = torch.autograd.grad(logits, [named[n] for n in used], d, allow_unused=True)
    out = {n: torch.zeros_like(v) for n, v in named.items()}
    for name, g in zip(used, grads):
        if g is not None:
            out[name] = g.detach()
    return out
