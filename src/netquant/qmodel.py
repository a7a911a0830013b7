"""The quantized-model representation shared by ``quantize``, ``finetune`` and ``container``.

A quantized network is a list of codebooks (32-bit shared values) and, for each quantized tensor, one
integer label per element that indexes its codebook. Pruned elements (exactly zero, excluded from
quantization) carry the label ``PRUNED``. Every other state_dict entry (unquantized parameters, BatchNorm
running statistics, ...) is kept as-is in ``passthrough``.

With all layers quantized together (the paper) there is one codebook and every tensor points at it;
layer-by-layer quantization (Deep Compression) has one codebook per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

PRUNED = -1


@dataclass
class QuantizedTensor:
    shape: tuple[int, ...]
    codebook: int  # index into QuantizedModel.codebooks
    labels: np.ndarray  # int32, flat (row-major), prod(shape) entries; PRUNED where pruned

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int32).reshape(-1)
        if self.labels.size != int(np.prod(self.shape, dtype=np.int64)):
            raise ValueError(f"labels have {self.labels.size} entries, shape {self.shape} needs {int(np.prod(self.shape))}")

    @property
    def mask(self) -> np.ndarray:
        """Boolean [prod(shape)]: True where the element is kept (not pruned)."""
        return self.labels != PRUNED


@dataclass
class QuantizedModel:
    codebooks: list[np.ndarray]  # float32 1-D arrays
    tensors: dict[str, QuantizedTensor]  # quantized entries by state_dict name
    passthrough: dict[str, np.ndarray]  # all other state_dict entries, stored as-is
    order: list[str]  # state_dict key order
    param_names: list[str] = field(default_factory=list)  # which keys are nn.Parameters (the paper's N)
    # what network this is, so a file can be rebuilt and evaluated on its own: {"arch", "dataset",
    # "num_classes", "in_channels", "input_size"} (see netquant.models.build); may be empty
    network: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codebooks = [np.ascontiguousarray(c, dtype=np.float32).reshape(-1) for c in self.codebooks]
        missing = set(self.order) ^ (set(self.tensors) | set(self.passthrough))
        if missing:
            raise ValueError(f"order and entries disagree on: {sorted(missing)}")
        for name, t in self.tensors.items():
            if not 0 <= t.codebook < len(self.codebooks):
                raise ValueError(f"{name}: codebook index {t.codebook} out of range")
            k = len(self.codebooks[t.codebook])
            if t.labels.size and (t.labels.max() >= k or t.labels.min() < PRUNED):
                raise ValueError(f"{name}: labels outside [{PRUNED}, {k})")

    def values(self, name: str) -> np.ndarray:
        """Decoded float32 values of a quantized tensor (pruned elements are exactly 0)."""
        t = self.tensors[name]
        book = np.append(self.codebooks[t.codebook], np.float32(0.0))  # label -1 reads the trailing 0
        return book[t.labels].reshape(t.shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded network as a PyTorch state_dict, in the original key order."""
        out = {}
        for name in self.order:
            arr = self.values(name) if name in self.tensors else self.passthrough[name]
            out[name] = torch.from_numpy(np.array(arr, copy=True))
        return out

    @property
    def n_params(self) -> int:
        """N of the paper: number of parameters of the network (quantized or not, pruned or not)."""
        total = 0
        for name in self.param_names:
            arr = self.tensors[name].labels if name in self.tensors else self.passthrough[name]
            total += int(arr.size)
        return total

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every entry, in state_dict order."""
        return {name: tuple(self.tensors[name].shape) if name in self.tensors else np.shape(self.passthrough[name])
                for name in self.order}

    @property
    def n_elements(self) -> int:
        """Elements of every entry, parameters and buffers, pruned or not."""
        return sum(int(np.prod(t.shape)) for t in self.tensors.values()) + sum(
            int(np.asarray(a).size) for a in self.passthrough.values())

    def with_unquantized_as(self, dtype) -> QuantizedModel:
        """The same model with its unquantized floating-point parameters (not its buffers) stored as
        ``dtype`` (e.g. float16: half the bits; loading them into a network gives float32 back)."""
        params = set(self.param_names)
        passthrough = {name: (np.asarray(a).astype(dtype) if name in params and np.asarray(a).dtype.kind == "f"
                              else a) for name, a in self.passthrough.items()}
        return QuantizedModel(self.codebooks, self.tensors, passthrough, self.order, self.param_names,
                              network=self.network)

    @property
    def n_quantized(self) -> int:
        """Number of quantized (unpruned) elements: the paper's sum of |C_i|."""
        return int(sum(int(t.mask.sum()) for t in self.tensors.values()))


def from_pruned(state_dict: dict[str, Any], masks: dict[str, Any], *,
                param_names: list[str] | None = None, network: dict | None = None) -> QuantizedModel:
    """A pruned float32 model as a QuantizedModel, to be saved with ``label_code="raw"``.

    Every entry with a mask (bool, True = kept, same shape) becomes a quantized tensor whose codebook is
    the set of its distinct kept values (by bit pattern, so -0.0 survives); the others
    are passthrough. Saved with ``label_code="raw"`` the file stores each kept value in 32 bits plus the
    coded positions: the paper's "pruned model" row. ``param_names``: the entries that are nn.Parameters
    (the paper's N); default all entries - pass ``[n for n, _ in model.named_parameters()]`` to leave out
    buffers.
    """
    unknown = set(masks) - set(state_dict)
    if unknown:
        raise ValueError(f"masks for entries not in the state_dict: {sorted(unknown)}")
    codebooks, tensors, passthrough = [], {}, {}
    for name, value in state_dict.items():
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if name not in masks:
            passthrough[name] = arr
            continue
        if arr.dtype != np.float32:
            raise ValueError(f"{name}: pruned tensors must be float32 to be stored exactly, got {arr.dtype}")
        mask = masks[name]
        mask = (mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).astype(bool)
        if mask.shape != arr.shape:
            raise ValueError(f"{name}: mask shape {mask.shape} differs from tensor shape {arr.shape}")
        kept = arr.reshape(-1)[mask.reshape(-1)]
        distinct, inverse = np.unique(kept.view(np.uint32), return_inverse=True)
        labels = np.full(arr.size, PRUNED, dtype=np.int32)
        labels[mask.reshape(-1)] = inverse.reshape(-1)
        tensors[name] = QuantizedTensor(arr.shape, len(codebooks), labels)
        codebooks.append(distinct.view(np.float32))
    names = list(state_dict)
    return QuantizedModel(codebooks, tensors, passthrough, names, names if param_names is None else list(param_names),
                          network=dict(network or {}))
