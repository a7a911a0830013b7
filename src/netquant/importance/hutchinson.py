"""Hutchinson's unbiased estimate of the exact Hessian diagonal, E_z[z * Hz] (a check on small networks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def hutchinson_batch(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
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
