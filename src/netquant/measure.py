"""Measuring one rate: quantize a network, fine-tune its shared values once per seed, write each result as
a ``.nqz`` file, and evaluate the network that file decodes to.

The workflow's sweeps and searches (:mod:`netquant.sweeps`) and :func:`netquant.compress.largest_ratio`
all measure rates through :func:`measure_rate`; :mod:`netquant.search` decides which rates to measure and
which of them meets an accuracy floor (:func:`netquant.search.meets_floor`, the one floor rule).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netquant import container
from netquant.finetune import finetune_codebooks
from netquant.qmodel import QuantizedModel
from netquant.quantize import QuantizationResult, quantize_network
from netquant.search import Probe


@dataclass
class Measured:
    """One file of a measured rate: the network it decodes to, the file's metrics, the evaluation of the
    decoded network, and how it was made (``seed`` None: before fine-tuning)."""

    path: str
    seed: int | None
    finetuned: bool
    decoded: QuantizedModel
    metrics: dict[str, Any]
    evaluation: dict[str, float]
    finetune_seconds: float
    other_files: dict[str, tuple[str, dict]] = field(default_factory=dict)  # code name -> (path, metrics)


@dataclass
class Rate:
    """A measured rate: its quantization (one result per codebook) and its files."""

    rate: dict[str, float]
    results: list[QuantizationResult]
    quantize_seconds: float
    files: list[Measured]

    def probe(self) -> Probe:
        """The search's view: the rate value, the fine-tuned files' accuracies and the smallest ratio."""
        tuned = [f for f in self.files if f.finetuned] or self.files
        return Probe(next(iter(self.rate.values())), [f.evaluation["accuracy"] for f in tuned],
                     min(f.metrics["ratio_file"] for f in tuned), {"file": tuned[0].path})


def write_files(stem: str, qmodel: QuantizedModel, coding: dict, other_codes: dict[str, dict] | None = None):
    """Write ``qmodel`` as ``<stem>.nqz`` with the codes of ``coding`` (``label_code``, ``index_code``,
    ``index_bound``; ``unquantized``: the precision of the unquantized parameters, "float32" or "float16") and as ``<stem>-<name>.nqz`` for every entry of ``other_codes`` (name -> the codes that
    differ). Every stream is computed once (one ``container.Encoding``) and every file is checked to decode
    bit-exactly before it is written. Returns (what the main file decodes to, its metrics, {name: (path,
    metrics)})."""
    coding = dict(coding)
    if coding.pop("unquantized", "float32") == "float16":
        qmodel = qmodel.with_unquantized_as(np.float16)
    encoding = container.Encoding(qmodel, coding.get("index_bound", container.DEFAULT_INDEX_BOUND))
    decoded, metrics = container.write(f"{stem}.nqz", qmodel, encoding=encoding, **coding)
    written = {}
    for name, code in (other_codes or {}).items():
        path = f"{stem}-{name}.nqz"
        written[name] = (path, container.write(path, qmodel, encoding=encoding, **{**coding, **code})[1])
    return decoded, metrics, written


def measure_rate(model: nn.Module, importance: dict[str, torch.Tensor] | None, rate: dict[str, float], *,
                 method: str, quantize: dict[str, Any], finetune: dict[str, Any], train_batches: Callable[[int], Any],
                 seeds: Iterable[int], test: Callable[[nn.Module], dict], stem: Callable[[int | None], str],
                 coding: dict, other_codes: dict[str, dict] | None = None, keep_unfinetuned: bool = False,
                 device: str = "cpu") -> Rate:
    """Quantize ``model`` at ``rate`` (:func:`netquant.quantize.quantize_network` with the keyword arguments
    ``quantize``), fine-tune the shared values once per seed of ``seeds`` (``finetune``: the settings of
    :func:`netquant.finetune.finetune_codebooks`, ``steps`` 0 = not at all; ``train_batches(seed)``: that
    seed's training batches), write each result (and, with ``keep_unfinetuned``, the quantized model before
    fine-tuning) to ``stem(seed)`` (``stem(None)`` before fine-tuning) with :func:`write_files`, and evaluate
    what each file decodes to with ``test(network)``."""
    start = time.perf_counter()
    qmodel, results = quantize_network(model, importance, method=method, rate=rate, return_results=True, **quantize)
    quantize_seconds = time.perf_counter() - start
    steps = finetune.get("steps", 0)
    versions = [(None, False, qmodel, 0.0)] if keep_unfinetuned or not steps else []
    for seed in seeds if steps else []:
        start = time.perf_counter()
        tuned, _ = finetune_codebooks(copy.deepcopy(model), qmodel, train_batches(seed), device=device, **finetune)
        versions.append((seed, True, tuned, time.perf_counter() - start))
    files = []
    for seed, finetuned, version, seconds in versions:
        path = stem(seed if finetuned else None)
        decoded, metrics, others = write_files(path, version, coding, other_codes if finetuned else None)
        network = copy.deepcopy(model)
        network.load_state_dict(decoded.state_dict())
        files.append(Measured(f"{path}.nqz", seed, finetuned, decoded, metrics, test(network), seconds, others))
    return Rate(rate, results, quantize_seconds, files)
