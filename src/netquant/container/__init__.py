"""The compressed model file (``.nqz``).

- ``format``: the file layout (its docstring is the specification), :class:`Encoding` (the streams of a
  model under every code, computed once; the bytes of a file), :func:`encode`, :func:`parse`,
  :func:`decode`;
- ``codes``: the codec table, one object per label code and per index code (its stored ID, its table,
  how it encodes and decodes);
- ``binary``: :class:`ContainerError`, varints, CRCs and the bounded section reader;
- ``files``: :func:`write` (only what decodes bit-exactly is written), :func:`save`, :func:`read`,
  :func:`read_state_dict`;
- ``accounting``: what a file's bits are spent on (:func:`metrics`), the paper's eq. (1)
  (:func:`eq1_ratio`).

A pruned, unquantized model becomes a file through :func:`netquant.qmodel.from_pruned` and
``label_code="raw"``.
"""

from netquant.container.accounting import eq1_ratio, file_metrics, metrics
from netquant.container.binary import ContainerError
from netquant.container.files import read, read_state_dict, save, write
from netquant.container.format import (
    DEFAULT_INDEX_BOUND,
    INDEX_CODES,
    LABEL_CODES,
    MAGIC,
    READABLE_VERSIONS,
    SECTIONS,
    VERSION,
    Encoding,
    decode,
    encode,
    parse,
)

__all__ = [
    "DEFAULT_INDEX_BOUND", "INDEX_CODES", "LABEL_CODES", "MAGIC", "READABLE_VERSIONS", "SECTIONS", "VERSION",
    "ContainerError", "Encoding", "decode", "encode", "eq1_ratio", "file_metrics", "metrics", "parse", "read",
    "read_state_dict", "save", "write",
]
