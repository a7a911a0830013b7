"""The paper's alternative to the Hessian (section 3.5): the square root of Adam's second moments.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from netquant import train
from netquant.importance.batches import Batch, validated


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
                for x, y in validated(batches(epoch) if callable(batches) else batches):
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
