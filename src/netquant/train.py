"""Training and evaluation loops (torchvision-reference style: plain loops, no framework).

Pruning masks (name -> bool tensor, True = kept) are held through training: masked gradients are zeroed
before each step and masked weights are zeroed after it, so pruned weights stay exactly 0.

Speed on a CPU (measured in benchmarks/bench_resnet_cpu.py): convolutional networks run in the
channels_last memory format (oneDNN's native layout), evaluation runs under ``torch.inference_mode`` in
batches small enough to stay in cache, and a recipe may train with bfloat16 autocast (``precision:
bf16``; weights, optimizer state and evaluation stay float32).

Resuming: with ``resume_path``, ``train`` writes its whole state (weights, optimizer, position, history,
torch's global RNG) atomically after every epoch and, when started again with the same ``resume_key``,
continues from the last epoch written. ``epoch_batches(epoch)`` must give the same batches for the same
epoch (seed its shuffling from the epoch number), so a resumed run computes exactly what an uninterrupted
one would.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from netquant.io import atomic_path

log = logging.getLogger("netquant")

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

LR_POLICIES = ("constant", "inv", "multistep", "cosine")
PRECISIONS = ("fp32", "bf16")


@dataclass
class Recipe:
    """A training schedule. Exactly one of ``iterations`` or ``epochs`` sets its length.

    lr_policy: "constant"; "inv" (Caffe: lr * (1 + gamma * it) ** -power); "multistep" (lr * gamma at each
    of ``milestones``, given as fractions of the total length); "cosine" (to 0). ``warmup``: a fraction of
    the total length over which the learning rate ramps up linearly from 0 before the policy applies.
    ``precision``: "fp32", or "bf16" (forward and backward under bfloat16 autocast; float32 weights).
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
    nesterov: bool = False
    warmup: float = 0.0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("a recipe needs exactly one of 'iterations' or 'epochs'")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"unknown lr_policy {self.lr_policy!r}; expected one of {', '.join(LR_POLICIES)}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected sgd or adam")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the training length in [0, 1), got {self.warmup!r}")

    def total_iterations(self, samples_per_epoch: int) -> int:
        if self.iterations is not None:
            return int(self.iterations)
        return math.ceil(self.epochs * samples_per_epoch / self.batch_size)

    def lr_factor(self, it: int, total: int) -> float:
        warm = self.warmup * total
        ramp = min(1.0, (it + 1) / warm) if warm > 0 else 1.0
        if self.lr_policy == "inv":
            return ramp * (1.0 + self.gamma * it) ** (-self.power)
        if self.lr_policy == "multistep":
            return ramp * self.gamma ** sum(it >= m * total for m in self.milestones)
        if self.lr_policy == "cosine":
            return ramp * 0.5 * (1.0 + math.cos(math.pi * max(0.0, it - warm) / (total - warm)))
        return ramp

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
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov)


def autocast(device: str, precision: str):
    """The autocast context of a precision ("fp32": none)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def use_channels_last(model: nn.Module) -> bool:
    """Convert a network with 2-d convolutions to the channels_last memory format (in place; the values and
    the state_dict's shapes are unchanged). Returns whether its inputs should be channels_last too."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def to_device(x: torch.Tensor, device: str, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


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
          on_epoch: Callable[[dict], None] | None = None, progress: bool = False,
          resume_path: str | os.PathLike | None = None, resume_key: str = "") -> list[dict]:
    """Train ``model`` in place for ``recipe``'s length; return one row per epoch.

    ``epoch_batches(epoch)`` gives one shuffled pass over the training data (the same batches for the same
    epoch). ``evaluate_fn(model)`` (e.g. test accuracy) is called at the end of each epoch; ``on_epoch(row)``
    receives each row as it is made. ``resume_path``/``resume_key``: see the module docstring; a file
    written under another key (another recipe, seed or stage) is not used, and is replaced.
    """
    from tqdm import tqdm

    model.to(device)
    channels_last = use_channels_last(model)
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
    state = _read_resume(resume_path, resume_key)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        it, epoch, history = state["iteration"], state["epoch"], state["history"]
        log.info("resuming from %s after epoch %d (iteration %d of %d)", resume_path, epoch, it, total)
    bar = tqdm(total=total, initial=it, disable=not progress, desc="train", mininterval=5)
    while it < total:
        model.train()
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y in epoch_batches(epoch):
            if it >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * recipe.lr_factor(it, total)
            x, y = to_device(x, device, channels_last), y.to(device, non_blocking=True)
            with autocast(device, recipe.precision):
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
        epoch += 1
        if resume_path is not None:
            _write_resume(resume_path, {"key": resume_key, "iteration": it, "epoch": epoch, "history": history,
                                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "rng": torch.get_rng_state()})
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    return history


def _read_resume(path: str | os.PathLike | None, key: str) -> dict | None:
    if path is None or not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable resume file only costs the epochs it held
        log.warning("ignoring unreadable resume file %s (%s); starting from the beginning", path, exc)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log.warning("ignoring resume file %s: written for other settings; starting from the beginning", path)
        return None
    return state


def _write_resume(path: str | os.PathLike, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches, *, device: str = "cpu", topk: tuple[int, ...] = (1,)) -> dict:
    """Mean cross-entropy loss and top-k accuracies (%) of ``model`` over ``batches``, in float32.

    Returns {"loss", "accuracy"} (top-1) plus "top5" etc. for other k.
    """
    model.to(device).eval()
    channels_last = use_channels_last(model)
    loss_sum, n = 0.0, 0
    hits = {k: 0 for k in topk}
    for x, y in batches:
        x, y = to_device(x, device, channels_last), y.to(device, non_blocking=True)
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
