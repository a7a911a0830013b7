"""The sweep and search steps: quantize a model at a rate, fine-tune, write files, evaluate what they decode to.

A curve (:class:`Curve`) is opened once; each of its points is measured by
:func:`netquant.measure.measure_rate`: quantize, fine-tune the shared values, write the file (and, for a
pruned, fine-tuned point, the same network in the codes of :data:`OTHER_CODES`), evaluate the decoded
network. ``sweep_curve`` measures a rate grid (the figures' curves), ``search_curve`` the operating-point
search of a Table 1 row (:mod:`netquant.search`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from netquant import report, search, train
from netquant.io import read_json
from netquant.measure import measure_rate
from netquant.quantize import quantized_names, rate_is_integer, rate_parameter
from netquant.quantize.network import network_rate_grid
from netquant.steps import describe, load_network, source_for, test_metrics, write_csv

log = logging.getLogger("netquant")

# The other files of a pruned, fine-tuned point: the same network with other codes (name -> the codes that
# differ from the config's coding); Table 1 reports each
OTHER_CODES = {"ans": {"label_code": "ans"}, "mask-ans": {"index_code": "mask-ans"},
               "context": {"label_code": "plane-context", "index_code": "plane-context"}}


@dataclass
class Curve:
    """What every point of one curve shares: the model, its masks and importance, the data, the options
    (the config's ``quantize.options``, mapped to each method by :func:`netquant.compress.quantize`)."""

    arch: str
    method: str
    importance_name: str
    scope: str
    source: dict
    data_source: Any
    model: torch.nn.Module
    stage: str
    include: str
    names: list[str]
    masks: dict
    importance: dict | None
    options: dict
    finetune: dict
    coding: dict
    device: str

    @property
    def rate_name(self) -> str:
        return rate_parameter(self.method)


def open_curve(arch: str, finetune: dict, *, method: str, importance_name: str, scope: str, quantize_cfg: dict,
               coding_cfg: dict, model_path: str, importance_path: str | None, source: dict, device: str,
               workers: int = 0) -> Curve:
    data_source = source_for(source, workers)
    model, ckpt = load_network(arch, model_path, data_source)
    names = quantized_names(model, quantize_cfg["params"])
    h = torch.load(importance_path, map_location="cpu", weights_only=True) if importance_path else None
    return Curve(arch, method, importance_name, scope, source, data_source, model, ckpt.meta.get("stage", ""),
                 quantize_cfg["params"], names, {k: v for k, v in ckpt.masks.items() if k in names}, h,
                 dict(quantize_cfg["options"]), finetune, coding_cfg, train.resolve_device(device))


def measure_point(curve: Curve, value: float, out_dir: str, *, seeds: list[int], generator=None,
                  keep_unfinetuned: bool = True) -> list[dict]:
    """Measure one rate value of the curve (:func:`netquant.measure.measure_rate`): fine-tuned once per seed
    (a generator drawn in turn when given, as the sweep does), each result (and the quantized model before
    fine-tuning) written as files, each file's decoded network evaluated. One row per main file."""
    point = f"{curve.rate_name}={value:.6g}"

    def stem(seed: int | None) -> str:
        suffix = "" if seed is None else "-ft" + (f"-seed{seed}" if generator is None else "")
        return os.path.join(out_dir, f"{point}{suffix}")

    def batches(seed: int):
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        return lambda: curve.data_source.train_epoch(curve.finetune["batch_size"], g, augment="none")

    measured = measure_rate(
        curve.model, curve.importance, {curve.rate_name: value}, method=curve.method,
        quantize={"scope": curve.scope, "include": curve.include, "masks": curve.masks, "seed": seeds[0],
                  "network": describe(curve.arch, curve.source["dataset"], curve.data_source),
                  "options": curve.options},
        finetune={k: v for k, v in curve.finetune.items() if k != "batch_size"}, train_batches=batches,
        seeds=seeds, test=lambda network: test_metrics(network, curve.data_source, curve.device), stem=stem,
        coding=curve.coding, other_codes=OTHER_CODES if curve.masks else None, keep_unfinetuned=keep_unfinetuned,
        device=curve.device)
    results = measured.results
    distortion = (sum(r.weighted_distortion * len(r.labels) for r in results)
                  / max(1, sum(len(r.labels) for r in results)))
    rows = []
    for file in measured.files:
        m, result, others = file.metrics, file.evaluation, file.other_files
        bits = m["bits_per_weight"]
        rows.append({
            "network": curve.arch, "variant": curve.stage, "scope": curve.scope, "method": curve.method,
            "importance": curve.importance_name, "rate_name": curve.rate_name, "rate_value": value,
            "finetuned": file.finetuned, "clusters": sum(len(b) for b in file.decoded.codebooks),
            "entropy_bits": m["label_entropy_bits"], "bits_fixed": bits["fixed"], "bits_huffman": bits["huffman"],
            "bits_ans": bits["ans"], "bits_ans_layer": bits["ans_layer"],
            **{f"index_bits_{code.replace('-', '_')}": v for code, v in m["index_bits_per_kept"].items()},
            "accuracy": result["accuracy"], "top5": result.get("top5", float("nan")),
            "loss": result["loss"], "ratio_file": m["ratio_file"], "ratio_eq1": m["ratio_eq1"],
            **{f"ratio_file_{name.replace('-', '_')}": others[name][1]["ratio_file"] if name in others
               else float("nan") for name in OTHER_CODES},
            "file_bytes": m["file_bytes"], "n_params": m["n_params"], "n_quantized": m["n_quantized"],
            "weighted_distortion": distortion, "quantize_seconds": measured.quantize_seconds,
            "finetune_seconds": file.finetune_seconds, "path": os.path.relpath(file.path),
            **{f"path_{name.replace('-', '_')}": os.path.relpath(others[name][0]) if name in others else ""
               for name in OTHER_CODES},
            **({} if generator is not None or not file.finetuned else {"seed": file.seed}),
        })
        label = (" +ft" if file.finetuned else "") + (f" seed {file.seed}" if generator is None and file.finetuned
                                                      else "")
        log.info("%s %s/%s %s%s: %.2f%%, %.3f bits (Huffman), ratio %.2f", curve.arch, curve.method,
                 curve.importance_name, point, label, result["accuracy"], bits["huffman"], m["ratio_file"])
    return rows


def _fresh_folder(folder: str) -> None:
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)


def sweep_curve(arch: str, finetune: dict, *, method: str, importance_name: str, scope: str, quantize_cfg: dict,
                coding_cfg: dict, model_path: str, importance_path: str | None, source: dict, out_dir: str,
                out_table: str, seed: int, device: str, workers: int = 0) -> list[dict]:
    """One curve of the paper's figures: quantize a model at every point of a rate grid, fine-tune the
    shared values, write each result as a .nqz file, and evaluate the network decoded from each file.

    One row per (rate point, before/after fine-tuning) goes to ``out_table``; the files go to ``out_dir``,
    which is emptied first so that it holds exactly the files of the table. ``finetune``: the network's
    fine-tuning settings (``steps`` >= 1, ``lr``, ``momentum``, ``weight_decay``, ``reduction``, ``batch_size``,
    ``precision``, ``max_grad_norm``).
    """
    curve = open_curve(arch, finetune, method=method, importance_name=importance_name, scope=scope,
                       quantize_cfg=quantize_cfg, coding_cfg=coding_cfg, model_path=model_path,
                       importance_path=importance_path, source=source, device=device, workers=workers)
    grid = network_rate_grid(curve.model, curve.importance, method=method, names=curve.names, masks=curve.masks,
                              zero_center=curve.options.get("zero_center", True), **quantize_cfg["rates"])
    g = torch.Generator().manual_seed(seed)  # fine-tuning batches, drawn in turn by the points of the grid
    _fresh_folder(out_dir)
    rows = [row for value in grid for row in measure_point(curve, value, out_dir, seeds=[seed], generator=g)]
    write_csv(out_table, rows)
    return rows


def paper_floor(arch: str, method: str, importance_name: str) -> float:
    """The paper's Table 1 accuracy of the row a curve serves (the DP solvers: that of their heuristic)."""
    counterpart = {"dp-kmeans": "hwkmeans", "dp-ecsq": "ecsq", "uniform-zero": "uniform"}.get(method, method)
    key = {"kmeans": "kmeans", "uniform": "uniform", "ecsq": "ecsq"}.get(counterpart)
    if counterpart == "hwkmeans":
        key = "adam-kmeans" if importance_name == "adam" else "hwkmeans"
    accuracy = report.paper_cell(report.load_paper_numbers(), arch, key or "")["accuracy"]
    if math.isnan(accuracy):  # the paper has no such row for this network
        raise ValueError(f"the paper's Table 1 has no {key or method} row for {arch}; search it with the floor "
                         "'pruned' only (config key search.floors)")
    return accuracy


def search_curve(arch: str, finetune: dict, *, method: str, importance_name: str, quantize_cfg: dict,
                 coding_cfg: dict, search_cfg: dict, floor_name: str, sweep_table: str, model_path: str,
                 model_metrics: str, importance_path: str | None, source: dict, out_dir: str, out_table: str,
                 seed: int, device: str, workers: int = 0) -> list[dict]:
    """The largest ratio of a Table 1 curve (pruned, all layers together) whose accuracy, averaged over
    ``search_cfg["seeds"]`` fine-tuning seeds, meets a floor: ``floor_name`` "pruned" (the pruned model's
    accuracy) or "paper" (the paper's Table 1 accuracy of the row). Brackets the floor from the sweep's
    fine-tuned points and bisects with at most ``search_cfg["max_probes"]`` probes (netquant.search); the
    best sweep point is measured with the seeds too when the probes do not beat it. One row per probe and
    seed goes to ``out_table``, with the probe's mean and spread and whether it is the one selected.
    """
    floor = read_json(model_metrics)["accuracy"] if floor_name == "pruned" else paper_floor(arch, method,
                                                                                          importance_name)
    curve = open_curve(arch, finetune, method=method, importance_name=importance_name, scope="all",
                       quantize_cfg=quantize_cfg, coding_cfg=coding_cfg, model_path=model_path,
                       importance_path=importance_path, source=source, device=device, workers=workers)
    swept = pd.read_csv(sweep_table)
    swept = swept[swept["finetuned"].astype(str).str.lower() == "true"]
    coarse = [search.Probe(float(r.rate_value), [float(r.accuracy)], float(r.ratio_file)) for r in swept.itertuples()]
    seeds = [seed + 1 + i for i in range(search_cfg["seeds"])]  # the sweep's own fine-tuning used ``seed``
    _fresh_folder(out_dir)
    rows: list[dict] = []

    def measure(value: float) -> search.Probe:
        measured = measure_point(curve, value, out_dir, seeds=seeds, keep_unfinetuned=False)
        rows.extend(measured)
        return search.Probe(value, [r["accuracy"] for r in measured], min(r["ratio_file"] for r in measured))

    _, made = search.search(measure, coarse, floor, max_probes=search_cfg["max_probes"],
                            integer=rate_is_integer(method))
    swept_best = search.best(coarse, floor) or max(coarse, key=lambda p: p.accuracy)
    if not any(p.rate == swept_best.rate for p in made):
        made.append(measure(swept_best.rate))
    chosen = search.best(made, floor) or max(made, key=lambda p: p.accuracy)
    for row in rows:
        probe = next(p for p in made if p.rate == row["rate_value"])
        row.update(floor_name=floor_name, floor=floor, probe_accuracy=probe.accuracy, probe_spread=probe.spread,
                   probe_ratio=probe.ratio, meets_floor=probe.meets(floor), selected=probe is chosen)
    write_csv(out_table, rows)
    return rows
