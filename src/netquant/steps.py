"""The workflow's steps as plain functions: each reads files, calls the library and writes files atomically.

The Snakemake scripts only unpack ``snakemake.*`` and call these, so every step also runs from Python.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from netquant import data, logs, models, prune, train
from netquant.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from netquant.io import atomic_path, write_json, write_text

log = logging.getLogger("netquant")


def setup(threads: int, seed: int, log_file: str | None = None) -> int:
    """One torch thread per Snakemake thread; seeded; log lines (and an uncaught error) to ``log_file``.

    Returns the number of data-loading worker processes the job may use: its threads beyond the first.
    """
    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    logs.setup(log_file)
    return max(0, int(threads) - 1)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def source_for(source: dict[str, Any], workers: int = 0):
    """Open a data source described as ``{"dataset", "prepared" | "imagenet_root", "image_size", "resize"}``."""
    return data.open_source(source["dataset"], prepared=source.get("prepared"),
                            imagenet_root=source.get("imagenet_root"), workers=workers,
                            image_size=source.get("image_size", 224), resize=source.get("resize", 256))


def build_model(arch: str, data_source, pretrained: str | None = None) -> torch.nn.Module:
    """A network of ``arch`` shaped for ``data_source`` (its classes, channels and image size)."""
    channels, size = data_source.input_shape
    return models.build(arch, num_classes=data_source.num_classes, in_channels=channels, input_size=size,
                        pretrained=pretrained)


def test_metrics(model: torch.nn.Module, source, device: str) -> dict:
    """Test loss and accuracy (%), and top-5 where the data source reports it (ImageNet)."""
    from netquant import compress

    return compress.evaluate(model, source.test_batches(), device=device, topk=source.topk)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random generator of one training epoch (shuffling and augmentation), so that any epoch's batches
    can be made again on their own, as a resumed run needs."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def fit(model, source, recipe: train.Recipe, *, seed: int, device: str, masks=None, arch: str = "",
        resume_path: str | None = None, progress: bool = True) -> list[dict]:
    """Train with per-epoch test metrics, logging each epoch; resumable from ``resume_path``."""

    def on_epoch(row: dict) -> None:
        log.info("epoch %d  it %d  lr %.5f  train loss %.4f  test acc %.2f%%  (%.1fs)", row["epoch"],
                 row["iteration"], row["lr"], row["train_loss"], row.get("test_accuracy", float("nan")),
                 row["seconds"])

    key = json.dumps({"arch": arch, "recipe": asdict(recipe), "seed": seed,
                      "masks": sorted((k, int(v.sum())) for k, v in (masks or {}).items())}, sort_keys=True)
    return train.train(model, lambda epoch: source.train_epoch(recipe.batch_size, epoch_generator(seed, epoch),
                                                               augment=recipe.augment),
                       source.samples_per_epoch, recipe, masks=masks, device=device,
                       evaluate_fn=lambda m: test_metrics(m, source, device), on_epoch=on_epoch,
                       progress=progress, resume_path=resume_path, resume_key=key)


def model_summary(model: torch.nn.Module, masks: dict | None = None) -> dict:
    layers = prune.sparsity_report(model, masks)
    n = sum(r["size"] for r in layers)
    nonzeros = sum(r["nonzeros"] for r in layers)
    return {"parameters": n, "nonzeros": nonzeros, "sparsity": 1.0 - nonzeros / n, "layers": layers}


def train_baseline(arch: str, network_cfg: dict, *, source: dict, out_model: str, out_metrics: str, out_epochs: str,
                   seed: int, device: str, workers: int = 0) -> dict:
    """Train (or, with ``network_cfg["pretrained"]``, load and evaluate) a baseline network.

    ``network_cfg``: the network's config section (its ``train`` recipe and ``pretrained`` setting).
    """
    device = train.resolve_device(device)
    data_source = source_for(source, workers)
    torch.manual_seed(seed)
    model = build_model(arch, data_source, network_cfg.get("pretrained"))
    start = time.perf_counter()
    history: list[dict] = []
    if network_cfg.get("pretrained"):
        log.info("%s: pretrained weights from %s, no training", arch, network_cfg["pretrained"])
    else:
        if "train" not in network_cfg:
            raise ValueError(f"config: {arch} has neither '{arch}.train' (a recipe) nor '{arch}.pretrained'")
        recipe = train.Recipe.from_config(network_cfg["train"])
        history = fit(model, data_source, recipe, seed=seed, device=device, arch=arch,
                      resume_path=resume_file(out_model))
    result = test_metrics(model, data_source, device)
    metrics = {"arch": arch, "stage": "baseline", "dataset": source["dataset"], **result,
               "seconds": time.perf_counter() - start, "device": device, **model_summary(model)}
    log.info("%s baseline: test accuracy %.2f%%", arch, result["accuracy"])
    save_checkpoint(out_model, Checkpoint(arch, model.state_dict(), {}, {"stage": "baseline", **result}))
    write_csv(out_epochs, history or [{"epoch": 0, **{f"test_{k}": v for k, v in result.items()}}])
    write_json(out_metrics, metrics)
    remove_resume_files(out_model)
    return metrics


def prune_network(arch: str, network_cfg: dict, *, baseline: str, source: dict, out_model: str, out_metrics: str,
                  out_epochs: str, seed: int, device: str, workers: int = 0) -> dict:
    """Iterative magnitude pruning to ``network_cfg["prune"]["sparsity"]``, retraining after each stage with masks
    held. ``network_cfg``: the network's config section."""
    device = train.resolve_device(device)
    cfg = network_cfg["prune"]
    data_source = source_for(source, workers)
    model, ckpt = load_network(arch, baseline, data_source)
    recipe = train.Recipe.from_config(cfg["retrain"])
    names = prune.prunable_names(model, cfg.get("params", "weights"))
    params = dict(model.named_parameters())
    target = prune.prunable_sparsity(cfg["sparsity"], cfg.get("counts", "prunable"),
                                     sum(p.numel() for p in params.values()), sum(params[n].numel() for n in names))
    start = time.perf_counter()
    rows: list[dict] = []
    masks: dict[str, torch.Tensor] = {}
    for stage, sparsity in enumerate(prune.sparsity_schedule(target, cfg.get("steps", 1)), start=1):
        masks = prune.magnitude_masks({n: params[n] for n in names}, sparsity, scope=cfg.get("scope", "global"))
        log.info("%s pruning stage %d: sparsity %.4f of %d prunable weights", arch, stage, sparsity,
                 sum(params[n].numel() for n in names))
        for row in fit(model, data_source, recipe, seed=seed + stage, device=device, masks=masks, arch=arch,
                       resume_path=resume_file(out_model, stage)):
            rows.append({"stage": stage, "target_sparsity": sparsity, **row})
    result = test_metrics(model, data_source, device)
    summary = model_summary(model, masks)
    metrics = {"arch": arch, "stage": "pruned", "dataset": source["dataset"], **result,
               "baseline_accuracy": ckpt.meta.get("accuracy"), "target_sparsity": cfg["sparsity"],
               "prunable_sparsity": 1.0 - sum(int(masks[n].sum()) for n in names) / sum(masks[n].numel() for n in names),
               "seconds": time.perf_counter() - start, "device": device, **summary}
    log.info("%s pruned: test accuracy %.2f%%, %d of %d parameters nonzero", arch, result["accuracy"],
             summary["nonzeros"], summary["parameters"])
    save_checkpoint(out_model, Checkpoint(arch, model.state_dict(), masks, {"stage": "pruned", **result}))
    write_csv(out_epochs, rows)
    write_json(out_metrics, metrics)
    remove_resume_files(out_model)
    return metrics


def resume_file(out_model: str, stage: int | None = None) -> str:
    """Where a training job keeps its per-epoch state until its model file is written (beside it)."""
    return f"{out_model}.resume{'' if stage is None else f'-stage{stage}'}"


def remove_resume_files(out_model: str) -> None:
    folder, name = os.path.split(os.path.abspath(out_model))
    for entry in os.listdir(folder):
        if entry.startswith(f"{name}.resume"):
            os.remove(os.path.join(folder, entry))


def load_network(arch: str, model_path: str, data_source) -> tuple[torch.nn.Module, Checkpoint]:
    """A network of ``arch`` with the weights (and masks) of a checkpoint file."""
    ckpt = load_checkpoint(model_path)
    if ckpt.arch != arch:
        raise ValueError(f"{model_path} holds a {ckpt.arch} checkpoint, expected {arch}")
    model = build_model(arch, data_source)
    model.load_state_dict(ckpt.state_dict)
    return model, ckpt


def compute_importance(arch: str, cfg: dict, name: str, *, model_path: str, source: dict, out: str,
                       out_summary: str, seed: int, device: str, workers: int = 0) -> dict:
    """Importance ``name`` of a model: ``hessian-N`` (diagonal Hessian over N training samples) or ``adam``
    (sqrt of Adam's bias-corrected second moments after retraining, paper section 3.5)."""
    from netquant import importance

    device = train.resolve_device(device)
    data_source = source_for(source, workers)
    model, ckpt = load_network(arch, model_path, data_source)
    model.to(device)
    start = time.perf_counter()
    if name.startswith("hessian-"):
        n = int(name.removeprefix("hessian-"))
        if n > data_source.samples_per_epoch:
            raise ValueError(f"importance {name} needs {n} training samples but {source['dataset']} has "
                             f"{data_source.samples_per_epoch}; use fewer samples in the config's figures.*")
        h = importance.hessian_diagonal(model, data_source.train_sample(n, cfg["batch_size"], seed), n,
                                        estimator=cfg["estimator"], floor=cfg["floor"], seed=seed, progress=True)
        details = {"samples": n, "estimator": cfg["estimator"], "floor": cfg["floor"]}
    elif name == "adam":
        acfg = cfg["adam"]
        g = torch.Generator().manual_seed(seed)
        h, history = importance.adam_second_moments(
            model, lambda epoch: data_source.train_epoch(acfg["batch_size"], g, augment="none"),
            epochs=acfg.get("epochs"), steps=acfg.get("steps"), lr=acfg["lr"], betas=tuple(acfg["betas"]),
            eps=acfg["eps"], masks=ckpt.masks or None, progress=True)
        details = {"adam": acfg, "history": history}
    else:
        raise ValueError(f"unknown importance {name!r}; expected hessian-<samples> or adam")
    summary = {"arch": arch, "importance": name, "model": model_path, **details,
               "seconds": time.perf_counter() - start, "device": device,
               "layers": importance.layer_summary(h, ckpt.masks or None)}
    with atomic_path(out) as tmp:
        torch.save({k: v.detach().cpu() for k, v in h.items()}, tmp)
    write_json(out_summary, summary)
    log.info("%s %s importance in %.1fs", arch, name, summary["seconds"])
    return summary


# The codes of the extra files of a pruned, fine-tuned point: name -> what differs from the config's coding
VARIANT_CODES = {"ans": {"label_code": "ans"}, "runlength": {"index_code": "mask-ans"},
                 "context": {"label_code": "ans-layer", "index_code": "mask-context"}}


def write_point(stem: str, qmodel, coding_cfg: dict, *, variants: bool) -> tuple[Any, dict, dict]:
    """Write one sweep point as ``<stem>.nqz`` with the config's codes and, with ``variants``, the same
    network as ``<stem>-ans.nqz`` (ANS-coded labels), ``<stem>-runlength.nqz`` (mask-ANS positions) and
    ``<stem>-context.nqz`` (labels with per-layer models, positions with the context model: the best codes).

    Every stream is computed once (one ``container.Encoding``) and every file decoded once, when it is
    checked before being written. Returns (what the main file decodes to, its metrics,
    {variant: (path, metrics)}); each variant decodes bit-exactly to the same network.
    """
    from netquant import compress, container

    encoding = container.Encoding(qmodel, coding_cfg["index_bound"])
    decoded, metrics = compress.write(qmodel, f"{stem}.nqz", encoding=encoding, **coding_cfg)
    written = {}
    if variants:
        for name, code in VARIANT_CODES.items():
            path = f"{stem}-{name}.nqz"
            written[name] = (path, compress.write(qmodel, path, encoding=encoding, **{**coding_cfg, **code})[1])
    return decoded, metrics, written


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
        from netquant import quantize

        return quantize.rate_parameter(self.method)


def open_curve(arch: str, finetune: dict, *, method: str, importance_name: str, scope: str, quantize_cfg: dict,
               coding_cfg: dict, model_path: str, importance_path: str | None, source: dict, device: str,
               workers: int = 0) -> Curve:
    from netquant import compress

    data_source = source_for(source, workers)
    model, ckpt = load_network(arch, model_path, data_source)
    names = compress.quantized_names(model, quantize_cfg["params"])
    h = torch.load(importance_path, map_location="cpu", weights_only=True) if importance_path else None
    return Curve(arch, method, importance_name, scope, source, data_source, model, ckpt.meta.get("stage", ""),
                 quantize_cfg["params"], names, {k: v for k, v in ckpt.masks.items() if k in names}, h,
                 dict(quantize_cfg["options"]), finetune, coding_cfg, train.resolve_device(device))


def measure_point(curve: Curve, value: float, out_dir: str, *, seeds: list[int], generator=None,
                  keep_unfinetuned: bool = True) -> list[dict]:
    """Quantize at one rate value, fine-tune once per seed (a generator drawn in turn when given, as the
    sweep does), write each result (and the quantized model before fine-tuning) as files, and evaluate
    what each file decodes to. One row per file written as the main file. The steps are those of the
    public API (:mod:`netquant.compress`)."""
    from netquant import compress

    start = time.perf_counter()
    qmodel, results = compress.quantize(
        curve.model, curve.importance, method=curve.method, scope=curve.scope, include=curve.include,
        masks=curve.masks, seed=seeds[0], return_results=True,
        network=compress.describe(curve.arch, curve.source["dataset"], curve.data_source),
        **{curve.rate_name: value}, **curve.options)
    quantize_seconds = time.perf_counter() - start
    distortion = (sum(r.weighted_distortion * len(r.labels) for r in results)
                  / max(1, sum(len(r.labels) for r in results)))
    point = f"{curve.rate_name}={value:.6g}"
    versions = [(None, False, qmodel, 0.0)] if keep_unfinetuned else []
    for seed in seeds:
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        tuned = compress.finetune(
            curve.model, qmodel,
            lambda g=g: curve.data_source.train_epoch(curve.finetune["batch_size"], g, augment="none"),
            device=curve.device, **{k: v for k, v in curve.finetune.items() if k != "batch_size"})
        versions.append((seed, True, tuned, time.perf_counter() - start))
    rows = []
    for seed, finetuned, qm, finetune_seconds in versions:
        suffix = ("-ft" if finetuned else "") + (f"-seed{seed}" if generator is None and finetuned else "")
        stem = os.path.join(out_dir, f"{point}{suffix}")
        # Table 1's rows are the pruned, fine-tuned points: those are written in every code it reports
        decoded, m, variants = write_point(stem, qm, curve.coding, variants=finetuned and bool(curve.masks))
        result = test_metrics(compress.load_decoded(decoded, build_model(curve.arch, curve.data_source)),
                              curve.data_source, curve.device)
        bits = m["bits_per_weight"]
        rows.append({
            "network": curve.arch, "variant": curve.stage, "scope": curve.scope, "method": curve.method,
            "importance": curve.importance_name, "rate_name": curve.rate_name, "rate_value": value,
            "finetuned": finetuned, "clusters": sum(len(b) for b in qm.codebooks),
            "entropy_bits": m["label_entropy_bits"], "bits_fixed": bits["fixed"], "bits_huffman": bits["huffman"],
            "bits_ans": bits["ans"], "bits_ans_layer": bits["ans_layer"],
            **{f"index_bits_{code.replace('-', '_')}": value for code, value in m["index_bits_per_kept"].items()},
            "accuracy": result["accuracy"], "top5": result.get("top5", float("nan")),
            "loss": result["loss"], "ratio_file": m["ratio_file"], "ratio_eq1": m["ratio_eq1"],
            **{f"ratio_file_{name}": variants[name][1]["ratio_file"] if name in variants else float("nan")
               for name in VARIANT_CODES},
            "file_bytes": m["file_bytes"], "n_params": m["n_params"], "n_quantized": m["n_quantized"],
            "weighted_distortion": distortion, "quantize_seconds": quantize_seconds,
            "finetune_seconds": finetune_seconds, "path": os.path.relpath(f"{stem}.nqz"),
            **{f"path_{name}": os.path.relpath(variants[name][0]) if name in variants else ""
               for name in VARIANT_CODES},
            **({} if generator is not None or not finetuned else {"seed": seed}),
        })
        label = (" +ft" if finetuned else "") + (f" seed {seed}" if generator is None and finetuned else "")
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
    from netquant import quantize

    curve = open_curve(arch, finetune, method=method, importance_name=importance_name, scope=scope,
                       quantize_cfg=quantize_cfg, coding_cfg=coding_cfg, model_path=model_path,
                       importance_path=importance_path, source=source, device=device, workers=workers)
    h = None if curve.importance is None else quantize.kept_values(curve.importance, curve.names, curve.masks)
    grid = quantize.rate_grid(method, quantize.kept_values(curve.model.state_dict(), curve.names, curve.masks), h,
                              zero_center=curve.options.get("zero_center", True), **quantize_cfg["rates"])
    g = torch.Generator().manual_seed(seed)  # fine-tuning batches, drawn in turn by the points of the grid
    _fresh_folder(out_dir)
    rows = [row for value in grid.tolist() for row in measure_point(curve, value, out_dir, seeds=[seed], generator=g)]
    write_csv(out_table, rows)
    return rows


def paper_floor(arch: str, method: str, importance_name: str) -> float:
    """The paper's Table 1 accuracy of the row a curve serves (the DP solvers: that of their heuristic)."""
    from netquant import report

    counterpart = {"dp-kmeans": "hwkmeans", "dp-ecsq": "ecsq"}.get(method, method)
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
    import pandas as pd

    from netquant import search
    from netquant.io import read_json

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

    integer = curve.rate_name == "k"
    _, made = search.search(measure, coarse, floor, max_probes=search_cfg["max_probes"], integer=integer)
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


def encode_pruned(arch: str, *, model_path: str, metrics_path: str, source: dict, coding_cfg: dict, out_file: str,
                  out_metrics: str) -> dict:
    """The pruned model before quantization as a file: the 32-bit value of every kept weight plus the coded
    positions (the paper's "pruned model" row of Table 1), and its size accounting."""
    from netquant import compress, container
    from netquant.io import read_json
    from netquant.qmodel import from_pruned

    ckpt = load_checkpoint(model_path)
    if not ckpt.masks:
        raise ValueError(f"{model_path} has no pruning masks; only a pruned model can be encoded this way")
    parameters = [row["name"] for row in read_json(metrics_path)["layers"]]
    network = compress.describe(arch, source["dataset"], source_for(source))
    qmodel = from_pruned(ckpt.state_dict, ckpt.masks, param_names=parameters, network=network)
    m = container.save(out_file, qmodel, label_code="raw", index_code=coding_cfg["index_code"],
                       index_bound=coding_cfg["index_bound"])
    write_json(out_metrics, m)
    return m
