"""Fine-tuning of the shared values (cluster centres) of a quantized network, assignments fixed.

At every step each quantized tensor is rebuilt from its codebook by one gather,
``weight = concat(centers, [0])[labels]`` (the label ``PRUNED`` reads the trailing constant 0, so pruned
elements stay exactly zero and receive no update), and the network runs through
``torch.func.functional_call`` with those tensors. Autograd through the gather gives each centre the sum of
its members' gradients; one step costs one forward/backward pass of the network plus one gather and one
scatter-add per quantized tensor, never a loop over clusters.

Only the centres are trained. Every passthrough entry (unquantized parameters, BatchNorm running
statistics) is frozen, and the network runs in eval mode: BatchNorm normalises with the stored running
statistics and dropout is off. The loss being minimised is therefore exactly the loss of the network that
is later decoded and evaluated, and the passthrough running statistics stay consistent with the new
centres (train-mode BatchNorm would optimise a different function - batch statistics - while the stored
running statistics would go stale).

Gradient reduction (the paper leaves it open; Deep Compression sums):

- ``"sum"``: the true gradient of the loss with respect to a shared value (chain rule). A centre's step
  grows with its population |C_j|, which ranges from a handful to 10^5 and more members, so the learning
  rate must be about one typical cluster size smaller than a training learning rate, and the few-member
  centres (the large-magnitude weights) then hardly move.
- ``"mean"`` (default): the sum divided by |C_j|, i.e. SGD with the fixed diagonal preconditioner
  1/|C_j|. Each centre moves like one average member weight would under plain SGD, so a learning rate of
  the order of the network's final training learning rate works whatever N, k, the pruning rate or the
  codebook layout (shared or per layer). Both reductions have the same stationary points.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor
from netquant.train import PRECISIONS, autocast, resolve_device, use_channels_last

REDUCTIONS = ("sum", "mean")

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FinetuneHistory:
    """What happened during fine-tuning; ``to_dict()`` is JSON-ready."""

    reduction: str
    loss: list[float] = field(default_factory=list)  # training loss of each step's batch, before its update
    lr: list[float] = field(default_factory=list)  # learning rate used at each step
    eval_before: Any = None  # eval_fn(model) on the quantized values, if eval_fn was given
    eval_after: Any = None  # eval_fn(model) on the fine-tuned values
    seconds: float = 0.0  # wall time of the optimisation loop
    clipped: int = 0  # steps whose gradient was scaled down to max_grad_norm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CodebookNetwork:
    """A network whose quantized tensors are gathered from trainable codebooks.

    ``centers[b]`` is a float32 leaf tensor [k_b] (requires grad) for codebook ``b``; ``counts[b]`` (float32
    [k_b]) is the number of unpruned elements that use each of its values, over all tensors.
    """

    def __init__(self, model: nn.Module, qmodel: QuantizedModel, device: torch.device, *,
                 train_unquantized: bool = False) -> None:
        self.model = model
        self.channels_last = use_channels_last(model)
        self.centers = [torch.tensor(book, dtype=torch.float32, device=device, requires_grad=True)
                        for book in qmodel.codebooks]
        self.counts = [torch.zeros(len(book), dtype=torch.float32, device=device) for book in qmodel.codebooks]
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.codebook_of: dict[str, int] = {}
        self.index: dict[str, torch.Tensor] = {}  # int64 [numel]; PRUNED mapped to k (the trailing zero)
        for name, tensor in qmodel.tensors.items():
            k = len(qmodel.codebooks[tensor.codebook])
            labels = torch.from_numpy(tensor.labels.astype(np.int64)).to(device)
            kept = labels != PRUNED
            self.counts[tensor.codebook] += torch.bincount(labels[kept], minlength=k).float()
            self.index[name] = torch.where(kept, labels, torch.full_like(labels, k))
            self.shapes[name] = tensor.shape
            self.codebook_of[name] = tensor.codebook
        # The unquantized parameters (biases, BatchNorm's affine parameters) as trainable leaves, or none
        self.unquantized = {
            name: torch.tensor(np.asarray(qmodel.passthrough[name]), dtype=torch.float32, device=device,
                               requires_grad=True)
            for name in qmodel.param_names
            if train_unquantized and name in qmodel.passthrough and np.asarray(qmodel.passthrough[name]).dtype.kind == "f"}
        # Detached views of the model's own passthrough tensors (no copy, no gradient).
        self.frozen = {name: value for name, value in model.state_dict().items()
                       if name not in self.index and name not in self.unquantized}
        self._zero = torch.zeros(1, dtype=torch.float32, device=device)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every state_dict entry: quantized ones gathered from the codebooks, the rest frozen."""
        books = [torch.cat([centers, self._zero]) for centers in self.centers]
        out = {**self.frozen, **self.unquantized}
        for name, index in self.index.items():
            value = books[self.codebook_of[name]][index].view(self.shapes[name])
            if self.channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
            out[name] = value
        return out

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return torch.func.functional_call(self.model, self.tensors(), (inputs,))

    def quantized_model(self, template: QuantizedModel) -> QuantizedModel:
        """``template`` with the current centres as codebooks (and trained unquantized parameters; labels,
        the other passthrough entries and order copied)."""
        return QuantizedModel(
            codebooks=[c.detach().cpu().numpy().astype(np.float32) for c in self.centers],
            tensors={name: QuantizedTensor(t.shape, t.codebook, t.labels.copy())
                     for name, t in template.tensors.items()},
            passthrough={name: (self.unquantized[name].detach().cpu().numpy().astype(np.asarray(v).dtype)
                                if name in self.unquantized else np.array(v, copy=True))
                         for name, v in template.passthrough.items()},
            order=list(template.order),
            param_names=list(template.param_names),
            network=dict(template.network),
        )


def finetune_codebooks(
    model: nn.Module,
    qmodel: QuantizedModel,
    batches: Iterable[Batch] | Callable[[], Iterable[Batch]],
    *,
    steps: int,
    lr: float | Callable[[int], float],
    lr_policy: str = "constant",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    reduction: str = "mean",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    max_grad_norm: float | None = 1.0,
    train_unquantized: bool = False,
    eval_fn: Callable[[nn.Module], Any] | None = None,
    progress: bool = False,
) -> tuple[QuantizedModel, FinetuneHistory]:
    """Fine-tune the shared values of ``qmodel`` by SGD with momentum; labels and pruning stay fixed.

    Args:
        model: a network of the architecture ``qmodel`` was made from. Its state is replaced by the decoded
            values of ``qmodel``; on return it holds the fine-tuned decoded values, on ``device``, in eval mode.
        qmodel: the quantized network; its state_dict keys and shapes must match ``model``'s.
        batches: (inputs, targets) training batches. Either a re-iterable (list, DataLoader: iterated again,
            i.e. a new epoch, whenever it runs out before ``steps``) or a callable returning a fresh
            iterable per epoch. A one-shot iterator (generator) must hold at least ``steps`` batches.
        steps: number of SGD steps (one batch each).
        lr: learning rate, or a function of the 0-based step returning it. Of the order of the final
            training learning rate with ``reduction="mean"``; about one typical cluster size (|C_j|)
            smaller with ``"sum"``.
        lr_policy: "constant", or "cosine": a number ``lr`` decays as ``lr (1 + cos(pi step / steps)) / 2``
            (on the pruned ResNet-32 at 3 bits a constant 0.01 peaked within 200 steps and then lost
            accuracy, ``reference/cpu/benchmarks/finetune_recovery_resnet32_*.json``).
        momentum, weight_decay: of torch.optim.SGD, on the centres (weight decay pulls centres towards 0).
        reduction: "mean" (default) or "sum" of the member gradients forming a centre's gradient; see the
            module docstring for why "mean" is the default.
        loss_fn: loss(outputs, targets) -> scalar; cross-entropy by default.
        device: "cpu", "cuda", a torch.device, or "auto" (cuda when available).
        precision: "fp32", or "bf16" (forward and backward under bfloat16 autocast; the centres stay float32).
        max_grad_norm: the centres' gradient (after the reduction) is scaled down to this norm when longer;
            None = never. A healthy quantized network's centre gradients are far below 1 with "mean"; a
            coarse quantization that wrecks the network (logits of 1e6 and more) has gradients of 1e8, and
            one unclipped step would make it NaN.
        train_unquantized: also train the parameters that are stored unquantized (biases, BatchNorm's
            affine parameters: 32 bits each in the file either way), plain gradients, same optimizer.
        eval_fn: optional eval_fn(model) -> anything JSON-able (e.g. accuracy), called before and after.
        progress: show a tqdm progress bar.

    Returns:
        The fine-tuned QuantizedModel (same labels, passthrough and order; updated codebooks, float32) and
        a FinetuneHistory (loss and lr per step, eval before/after, seconds).
    """
    _check_arguments(steps, lr, momentum, weight_decay, reduction)
    if lr_policy not in LR_POLICIES:
        raise ValueError(f"lr_policy must be one of {', '.join(LR_POLICIES)}, got {lr_policy!r}")
    if lr_policy == "cosine" and not callable(lr):
        lr = functools.partial(_cosine, lr, steps)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if max_grad_norm is not None and not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a finite number > 0 or None, got {max_grad_norm!r}")
    _check_matches(model, qmodel)
    device = torch.device(resolve_device(device) if isinstance(device, str) else device)

    model.load_state_dict(qmodel.state_dict())
    model.to(device).eval()
    history = FinetuneHistory(reduction=reduction)
    if eval_fn is not None:
        history.eval_before = eval_fn(model)
        model.eval()

    network = CodebookNetwork(model, qmodel, device, train_unquantized=train_unquantized)
    trained = network.centers + list(network.unquantized.values())
    optimizer = torch.optim.SGD(trained, lr=0.0, momentum=momentum, weight_decay=weight_decay)
    stream = _endless(batches)
    start = time.perf_counter()
    with tqdm(total=steps, desc="finetune", unit="step", disable=not progress) as bar:
        for step in range(steps):
            step_lr = float(lr(step)) if callable(lr) else float(lr)
            if not (math.isfinite(step_lr) and step_lr >= 0):
                raise ValueError(f"lr({step}) = {step_lr}: the learning rate must be finite and >= 0")
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            inputs, targets = _unpack(next(stream), step)
            with autocast(str(device), precision):
                loss = loss_fn(network(inputs.to(device, non_blocking=True)), targets.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if reduction == "mean":
                for centers, counts in zip(network.centers, network.counts):
                    if centers.grad is not None:
                        centers.grad.div_(counts.clamp(min=1.0))
            if max_grad_norm is not None:
                norm = float(torch.nn.utils.clip_grad_norm_(trained, max_grad_norm))
                history.clipped += int(norm > max_grad_norm)
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value) and step == 0:
                raise FloatingPointError(
                    f"the quantized network's loss is {value} before any update; check the quantized model "
                    "(codebooks, labels, passthrough statistics) and the data"
                )
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"fine-tuning loss is {value} at step {step}: lower the learning rate (now {step_lr:g}"
                    + (", and with reduction='sum' it must be about one cluster size below a training lr)"
                       if reduction == "sum" else ")")
                )
            history.loss.append(value)
            history.lr.append(step_lr)
            bar.update()
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{value:.4f}")
    history.seconds = time.perf_counter() - start

    result = network.quantized_model(qmodel)
    model.load_state_dict(result.state_dict())
    if eval_fn is not None:
        history.eval_after = eval_fn(model)
        model.eval()
    return result, history


LR_POLICIES = ("constant", "cosine")


def _cosine(lr: float, steps: int, step: int) -> float:
    return lr * (1 + math.cos(math.pi * step / steps)) / 2


def _check_arguments(steps: Any, lr: Any, momentum: Any, weight_decay: Any, reduction: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not callable(lr) and not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0 or a function of the step, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_matches(model: nn.Module, qmodel: QuantizedModel) -> None:
    """One clear error when ``qmodel`` was not made from a network of ``model``'s architecture."""
    state = model.state_dict()
    in_q = set(qmodel.order)
    not_in_model = [k for k in qmodel.order if k not in state]
    not_in_q = [k for k in state if k not in in_q]
    if not_in_model or not_in_q:
        raise ValueError(
            "the quantized model does not match the network's state_dict: "
            f"{len(not_in_model)} quantized-model entries are not in the network {_few(not_in_model)}, "
            f"{len(not_in_q)} network entries are not in the quantized model {_few(not_in_q)}; "
            "build the network with the architecture (and num_classes/in_channels) the quantized model came from"
        )
    wrong = []
    for name in qmodel.order:
        shape = qmodel.tensors[name].shape if name in qmodel.tensors else tuple(np.shape(qmodel.passthrough[name]))
        if tuple(state[name].shape) != tuple(shape):
            wrong.append(f"{name}: quantized {tuple(shape)} vs network {tuple(state[name].shape)}")
    if wrong:
        raise ValueError(
            f"the quantized model does not match the network's shapes ({'; '.join(wrong[:5])}"
            f"{'; ...' if len(wrong) > 5 else ''}); build the network with the architecture "
            "(and num_classes/in_channels/input_size) the quantized model came from"
        )
    not_float = [name for name in qmodel.tensors if not state[name].is_floating_point()]
    if not_float:
        raise ValueError(f"quantized entries must be floating-point tensors of the network, not {_few(not_float)}")


def _few(names: list[str], n: int = 5) -> str:
    return "(" + ", ".join(names[:n]) + (", ..." if len(names) > n else "") + ")"


def _endless(batches: Iterable[Batch] | Callable[[], Iterable[Batch]]) -> Iterator[Batch]:
    """Yield batches forever, starting a new epoch (re-iterating or calling ``batches``) when one ends."""
    one_shot = isinstance(batches, Iterator)
    served = 0
    while True:
        epoch = batches() if callable(batches) else batches
        count = 0
        for batch in epoch:
            count += 1
            yield batch
        served += count
        if one_shot:
            raise ValueError(
                f"batches ran out after {served} steps; pass a list or DataLoader (re-iterated per epoch), "
                "a callable returning a fresh epoch iterator, or fewer steps"
            )
        if count == 0:
            raise ValueError("batches yielded no batch in an epoch; give at least one (inputs, targets) batch")


def _unpack(batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        inputs, targets = batch
    except (TypeError, ValueError):
        raise ValueError(f"batch {step} is not an (inputs, targets) pair: got {type(batch).__name__}") from None
    return inputs, targets
