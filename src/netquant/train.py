"""Training and evaluation loops (torchvision-reference style: plain loops, no framework).

Pruning masks (name -> bool tensor, True = kept) are held through training: masked gradients are zeroed
before each step and masked weights are zeroed after it, so pruned weights stay exactly 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

LR_POLICIES = ("constant", "inv", "multistep", "cosine")


@dataclass
class Recipe:
    """A training schedule. Exactly one of ``iterations`` or ``epochs`` sets its length.

    lr_policy: "constant"; "inv" (Caffe: lr * (1 + gamma * it) ** -power); "multistep" (lr * gamma at each
    of ``milestones``, given as fractions of the total length); "cosine" (to 0).
    """

    lr: float
    batch_size: int
    iterations: int | None = None
    epochs: float | None = None
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_policy: str = "constant"
    gamma: float = 0.1
    power: float = 0.75
    milestones: list[float] = field(default_factory=list)
    augment: str = "none"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("a recipe needs exactly one of 'iterations' or 'epochs'")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"unknown lr_policy {self.lr_policy!r}; expected one of {', '.join(LR_POLICIES)}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected sgd or adam")

    def total_iterations(self, samples_per_epoch: int) -> int:
        if self.iterations is not None:
            return int(self.iterations)
        return math.ceil(self.epochs * samples_per_epoch / self.batch_size)

    def lr_factor(self, it: int, total: int) -> float:
        if self.lr_policy == "inv":
            return (1.0 + self.gamma * it) ** (-self.power)
        if self.lr_policy == "multistep":
            return self.gamma ** sum(it >= m * total for m in self.milestones)
        if self.lr_policy == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * it / total))
        return 1.0

    @classmethod
    def from_config(cls, cfg: dict) -> "Recipe":
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown recipe keys {sorted(unknown)}; expected some of {sorted(known)}")
        cfg = dict(cfg)
        if "betas" in cfg:
            cfg["betas"] = tuple(cfg["betas"])
        return cls(**cfg)


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def masked_step(optimizer: torch.optim.Optimizer, params: dict[str, torch.Tensor],
                masks: dict[str, torch.Tensor]) -> None:
    """One optimizer step that leaves pruned weights exactly 0: their gradients are zeroed before the step
    (so momentum and Adam's moments never see them) and the weights again after it (weight decay).
    ``masks``: bool tensors on the parameters' device, True = kept."""
    with torch.no_grad():
        for name, mask in masks.items():
            if params[name].grad is not None:
                params[name].grad.masked_fill_(~mask, 0)
    optimizer.step()
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(~mask, 0)


def train(model: nn.Module, epoch_batches: Callable[[int], Batches], samples_per_epoch: int, recipe: Recipe, *,
          masks: dict[str, torch.Tensor] | None = None, device: str = "cpu",
          evaluate_fn: Callable[[nn.Module], dict] | None = None,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = False) -> list[dict]:
    """Train ``model`` in place for ``recipe``'s length; return one row per epoch.

    ``epoch_batches(epoch)`` gives one shuffled pass over the training data. ``evaluate_fn(model)`` (e.g. test
    accuracy) is called at the end of each epoch; ``on_epoch(row)`` receives each row as it is made.
    """
    from tqdm import tqdm

    model.to(device)
    masks = {k: v.to(device).bool() for k, v in (masks or {}).items()}
    params = dict(model.named_parameters())
    unknown = set(masks) - set(params)
    if unknown:
        raise ValueError(f"masks name parameters the model does not have: {sorted(unknown)}")
    apply_masks(model, masks)
    optimizer = make_optimizer(model.parameters(), recipe)
    total = recipe.total_iterations(samples_per_epoch)
    history: list[dict] = []
    it, epoch = 0, 0
    bar = tqdm(total=total, disable=not progress, desc="train", mininterval=5)
    while it < total:
        model.train()
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in epoch_batches(epoch):
            if it >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * recipe.lr_factor(it, total)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            masked_step(optimizer, params, masks)
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
            it += 1
            bar.update(1)
        row = {"epoch": epoch + 1, "iteration": it, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / max(seen, 1), "train_accuracy": 100.0 * correct / max(seen, 1),
               "seconds": time.perf_counter() - start}
        if evaluate_fn is not None:
            row.update({f"test_{k}": v for k, v in evaluate_fn(model).items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        epoch += 1
    bar.close()
    return history


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, *, device: str = "cpu", topk: tuple[int, ...] = (1,)) -> dict:
    """Mean cross-entropy loss and top-k accuracies (%) of ``model`` over ``batches``.

    Returns {"loss", "accuracy"} (top-1) plus "top5" etc. for other k.
    """
    model.to(device).eval()
    loss_sum, n = 0.0, 0
    hits = {k: 0 for k in topk}
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        ranked = out.topk(min(max(topk), out.shape[1]), dim=1).indices
        for k in topk:
            hits[k] += (ranked[:, :k] == y[:, None]).any(1).sum().item()
        n += len(y)
    if n == 0:
        raise ValueError("evaluate got no samples")
    result = {"loss": loss_sum / n}
    for k in topk:
        result["accuracy" if k == 1 else f"top{k}"] = 100.0 * hits[k] / n
    return result


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
