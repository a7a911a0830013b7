"""The compressed model file (``.nqz``).

- ``format``: the file layout, its writer and reader (:func:`save`, :func:`write`, :func:`read`,
  :func:`load`, :func:`encode`, :func:`decode`, :func:`parse`), and :class:`Encoding`, the streams of a
  model under every code computed once;
- ``accounting``: what a file's bits are spent on (:func:`metrics`), the paper's eq. (1)
  (:func:`eq1_ratio`).

A pruned, unquantized model becomes a file through :func:`netquant.qmodel.from_pruned` and
``label_code="raw"``.
"""

from netquant.container.accounting import eq1_ratio, file_metrics, metrics
from netquant.container.format import (
    DEFAULT_INDEX_BOUND,
    INDEX_CODES,
    LABEL_CODES,
    MAGIC,
    READABLE_VERSIONS,
    SECTIONS,
    VERSION,
    ContainerError,
    Encoding,
    decode,
    encode,
    load,
    parse,
    read,
    save,
    write,
)

__all__ = [
    "DEFAULT_INDEX_BOUND", "INDEX_CODES", "LABEL_CODES", "MAGIC", "READABLE_VERSIONS", "SECTIONS", "VERSION",
    "ContainerError", "Encoding", "decode", "encode", "eq1_ratio", "file_metrics", "load", "metrics", "parse",
    "read", "save", "write",
]
