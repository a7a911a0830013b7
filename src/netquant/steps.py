"""The workflow's steps as plain functions: each reads files, calls the library and writes files atomically.

The Snakemake scripts only unpack ``snakemake.*`` and call these, so every step also runs from Python.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from typing import Any

import torch

from netquant import data, models, prune, train
from netquant.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from netquant.io import write_json, write_text

log = logging.getLogger("netquant")


def setup(threads: int, seed: int, log_file: str | None = None) -> None:
    """One torch thread per Snakemake thread; seeded; log lines to ``log_file`` (and stderr)."""
    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        os.makedirs(os.path.dirname(log_file) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def source_for(net: dict[str, Any], prepared: str | None, imagenet_root: str | None, workers: int = 0):
    """The data source of a network's config section (``dataset``, ``augment``, ``image_size``...)."""
    return data.open_source(net["dataset"], prepared=prepared, imagenet_root=imagenet_root,
                            augment=net.get("augment", "none"), workers=workers,
                            image_size=net.get("image_size", 224), resize=net.get("resize", 256))


def build_model(arch: str, net: dict[str, Any], source) -> torch.nn.Module:
    return models.build(arch, num_classes=source.num_classes, pretrained=net.get("pretrained"))


def test_metrics(model: torch.nn.Module, source, device: str, arch: str) -> dict:
    topk = (1, 5) if arch == "alexnet" else (1,)
    return train.evaluate(model, source.test_batches(), device=device, topk=topk)


def fit(model, source, recipe: train.Recipe, *, seed: int, device: str, masks=None, arch: str = "",
        progress: bool = True) -> list[dict]:
    """Train with per-epoch test metrics, logging each epoch."""
    g = torch.Generator().manual_seed(seed)

    def on_epoch(row: dict) -> None:
        log.info("epoch %d  it %d  lr %.5f  train loss %.4f  test acc %.2f%%  (%.1fs)", row["epoch"],
                 row["iteration"], row["lr"], row["train_loss"], row.get("test_accuracy", float("nan")),
                 row["seconds"])

    return train.train(model, lambda epoch: source.train_epoch(recipe.batch_size, g, augment=recipe.augment),
                       source.samples_per_epoch, recipe, masks=masks, device=device,
                       evaluate_fn=lambda m: test_metrics(m, source, device, arch), on_epoch=on_epoch,
                       progress=progress)


def model_summary(model: torch.nn.Module, masks: dict | None = None) -> dict:
    layers = prune.sparsity_report(model, masks)
    n = sum(r["size"] for r in layers)
    nonzeros = sum(r["nonzeros"] for r in layers)
    return {"parameters": n, "nonzeros": nonzeros, "sparsity": 1.0 - nonzeros / n, "layers": layers}


def train_baseline(arch: str, net: dict, *, prepared: str | None, imagenet_root: str | None, out_model: str,
                   out_metrics: str, out_epochs: str, seed: int, device: str, workers: int = 0) -> dict:
    """Train (or, with ``net["pretrained"]``, load and evaluate) a baseline network."""
    device = train.resolve_device(device)
    source = source_for(net, prepared, imagenet_root, workers)
    torch.manual_seed(seed)
    model = build_model(arch, net, source)
    start = time.perf_counter()
    history: list[dict] = []
    if net.get("pretrained"):
        log.info("%s: pretrained weights from %s, no training", arch, net["pretrained"])
    else:
        recipe = train.Recipe.from_config(net["train"])
        history = fit(model, source, recipe, seed=seed, device=device, arch=arch)
    result = test_metrics(model, source, device, arch)
    metrics = {"arch": arch, "stage": "baseline", "dataset": net["dataset"], **result,
               "seconds": time.perf_counter() - start, "device": device, **model_summary(model)}
    log.info("%s baseline: test accuracy %.2f%%", arch, result["accuracy"])
    save_checkpoint(out_model, Checkpoint(arch, model.state_dict(), {}, {"stage": "baseline", **result}))
    write_csv(out_epochs, history or [{"epoch": 0, **{f"test_{k}": v for k, v in result.items()}}])
    write_json(out_metrics, metrics)
    return metrics


def prune_network(arch: str, net: dict, *, baseline: str, prepared: str | None, imagenet_root: str | None,
                  out_model: str, out_metrics: str, out_epochs: str, seed: int, device: str, workers: int = 0) -> dict:
    """Iterative magnitude pruning to ``net.prune.sparsity``, retraining after each stage with masks held."""
    device = train.resolve_device(device)
    cfg = net["prune"]
    source = source_for(net, prepared, imagenet_root, workers)
    ckpt = load_checkpoint(baseline)
    model = build_model(arch, {**net, "pretrained": None}, source)
    model.load_state_dict(ckpt.state_dict)
    recipe = train.Recipe.from_config(cfg["retrain"])
    names = prune.prunable_names(model, cfg.get("params", "weights"))
    params = dict(model.named_parameters())
    start = time.perf_counter()
    rows: list[dict] = []
    masks: dict[str, torch.Tensor] = {}
    for stage, sparsity in enumerate(prune.sparsity_schedule(cfg["sparsity"], cfg.get("steps", 1)), start=1):
        masks = prune.magnitude_masks({n: params[n] for n in names}, sparsity, scope=cfg.get("scope", "global"))
        log.info("%s pruning stage %d: sparsity %.4f of %d prunable weights", arch, stage, sparsity,
                 sum(params[n].numel() for n in names))
        for row in fit(model, source, recipe, seed=seed + stage, device=device, masks=masks, arch=arch):
            rows.append({"stage": stage, "target_sparsity": sparsity, **row})
    result = test_metrics(model, source, device, arch)
    summary = model_summary(model, masks)
    metrics = {"arch": arch, "stage": "pruned", "dataset": net["dataset"], **result,
               "baseline_accuracy": ckpt.meta.get("accuracy"), "target_sparsity": cfg["sparsity"],
               "prunable_sparsity": 1.0 - sum(int(masks[n].sum()) for n in names) / sum(masks[n].numel() for n in names),
               "seconds": time.perf_counter() - start, "device": device, **summary}
    log.info("%s pruned: test accuracy %.2f%%, %d of %d parameters nonzero", arch, result["accuracy"],
             summary["nonzeros"], summary["parameters"])
    save_checkpoint(out_model, Checkpoint(arch, model.state_dict(), masks, {"stage": "pruned", **result}))
    write_csv(out_epochs, rows)
    write_json(out_metrics, metrics)
    return metrics
