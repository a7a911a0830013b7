"""The (inputs, targets) batches every estimator reads, checked as they come."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def validated(batches: Iterable[Batch]) -> Iterator[Batch]:
    """The batches, each checked to be an (inputs [B, ...], int64 targets [B]) pair of tensors."""
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
