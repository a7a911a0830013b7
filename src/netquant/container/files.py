"""Reading and writing .nqz files: a file is written only once its bytes decode bit-exactly to the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netquant.container.accounting import file_metrics
from netquant.container.binary import ContainerError
from netquant.container.format import (
    DEFAULT_INDEX_BOUND,
    Encoding,
    decode,
    decode_parsed,
    parse,
)
from netquant.io import write_bytes
from netquant.qmodel import QuantizedModel


def read(path: str | os.PathLike, max_elements: int | None = None) -> QuantizedModel:
    """The QuantizedModel stored in the .nqz file ``path``. Raises ``ContainerError`` on any defect (see
    :func:`decode`)."""
    try:
        return decode(Path(path).read_bytes(), max_elements)
    except ContainerError as exc:
        raise ContainerError(f"{path}: {exc}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The decoded network of the .nqz file ``path`` as a PyTorch state_dict (original key order)."""
    return read(path).state_dict()


def write(path: str | os.PathLike, qmodel: QuantizedModel, *, label_code: str = "huffman",
          index_code: str = "deep-compression", index_bound: int = DEFAULT_INDEX_BOUND,
          encoding: Encoding | None = None) -> tuple[QuantizedModel, Any]:
    """Write ``qmodel`` to the .nqz file ``path`` (atomically); return what the file decodes to and its
    metrics (``netquant.container.metrics``).

    The bytes are decoded before they are written; a file that does not decode bit-exactly to ``qmodel`` is
    never written (``RuntimeError``). ``encoding``: the model's :class:`Encoding`, to share its streams
    between several files of the same model.

    ``index_bound`` (deep-compression only): the largest gap coded without a filler. The default 32 = 2^5
    is Deep Compression's bound for fc layers (5-bit indices; 8 bits for conv layers), used for all
    tensors. Measured on i.i.d. masks of 430k elements (stream + table bits per kept weight), 32 stays
    within 8% of the mask entropy from 1% to 50% density (0.8% at LeNet's 8.5%); a bound of 8 costs 2x
    at 1% density (every filler takes at least a 1-bit codeword), 256 is 1.7% better at 1% but no better
    from 3% up (its longer code table costs more than the fillers it saves).
    """
    if encoding is None:
        encoding = Encoding(qmodel, index_bound)
    elif encoding.qmodel is not qmodel or encoding.index_bound != index_bound:
        raise ValueError("the encoding is of another model or index bound")
    data = encoding.file(label_code, index_code)
    parsed = parse(data, max_elements=qmodel.n_elements)
    decoded = decode_parsed(parsed)
    _check_equal(qmodel, decoded.model)
    write_bytes(path, data)
    return decoded.model, file_metrics(parsed, decoded, encoding)


def save(path: str | os.PathLike, qmodel: QuantizedModel, *, label_code: str = "huffman",
         index_code: str = "deep-compression", index_bound: int = DEFAULT_INDEX_BOUND) -> dict[str, Any]:
    """:func:`write` returning only the metrics of the file."""
    return write(path, qmodel, label_code=label_code, index_code=index_code, index_bound=index_bound)[1]


def _check_equal(original: QuantizedModel, decoded: QuantizedModel) -> None:
    if list(original.order) != list(decoded.order):
        raise RuntimeError("encoded file does not decode to the same state_dict keys")
    if original.network != decoded.network:
        raise RuntimeError("encoded file does not decode to the same network description (it must be JSON)")
    for name in original.order:
        if name in original.tensors:
            same = np.array_equal(original.values(name).view(np.uint32), decoded.values(name).view(np.uint32))
        else:
            a, b = np.asarray(original.passthrough[name]), decoded.passthrough[name]
            same = (a.shape == b.shape and a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=")
                    and np.ascontiguousarray(a).astype(b.dtype).tobytes() == b.tobytes())
        if not same:
            raise RuntimeError(f"encoded file does not decode bit-exactly to {name!r}; nothing was written")


