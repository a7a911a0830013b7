"""The workflow's steps as plain functions: each reads files, calls the library and writes files atomically.

The Snakemake scripts only unpack ``snakemake.*`` and call these, so every step also runs from Python.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import torch

from netquant import batchnorm, container, data, importance, logs, models, prune, train
from netquant.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from netquant.io import atomic_path, read_json, write_json, write_text
from netquant.qmodel import from_pruned

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


def describe(arch: str, dataset: str, data_source) -> dict[str, Any]:
    """The network description stored in a file (checked by ``compress.build_from_description`` when the
    file is read): enough to build the network again."""
    channels, size = data_source.input_shape
    return {"arch": arch, "dataset": dataset, "num_classes": int(data_source.num_classes),
            "in_channels": int(channels), "input_size": int(size)}


def build_model(arch: str, data_source, pretrained: str | None = None) -> torch.nn.Module:
    """A network of ``arch`` shaped for ``data_source`` (its classes, channels and image size)."""
    channels, size = data_source.input_shape
    return models.build(arch, num_classes=data_source.num_classes, in_channels=channels, input_size=size,
                        pretrained=pretrained)


def test_metrics(model: torch.nn.Module, source, device: str) -> dict:
    """Test loss and accuracy (%), and top-5 where the data source reports it (ImageNet)."""
    return train.evaluate(model, source.test_batches(), device=train.resolve_device(device), topk=source.topk)


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
    names = prune.prunable_names(model, cfg.get("params", "weights"))
    start = time.perf_counter()
    rows: list[dict] = []
    if cfg.get("pretrained"):
        log.info("%s: pruned network from %s, no pruning", arch, cfg["pretrained"])
        model, pruned = load_network(arch, cfg["pretrained"], data_source)
        masks = pruned.masks
        if set(masks) != set(names):
            raise ValueError(f"{cfg['pretrained']} (config key '{arch}.prune.pretrained') holds masks of "
                             f"{len(masks)} tensors, not of the {len(names)} prunable ones: give a pruned "
                             f"netquant checkpoint (results/{arch}/pruned/model.pt)")
    else:
        masks = _prune_and_retrain(arch, cfg, model, names, data_source, rows, seed=seed, device=device,
                                   out_model=out_model)
    result = test_metrics(model, data_source, device)
    summary = model_summary(model, masks)
    metrics = {"arch": arch, "stage": "pruned", "dataset": source["dataset"], **result,
               "baseline_accuracy": ckpt.meta.get("accuracy"), "target_sparsity": cfg["sparsity"],
               "prunable_sparsity": 1.0 - sum(int(masks[n].sum()) for n in names) / sum(masks[n].numel() for n in names),
               "seconds": time.perf_counter() - start, "device": device, **summary}
    log.info("%s pruned: test accuracy %.2f%%, %d of %d parameters nonzero", arch, result["accuracy"],
             summary["nonzeros"], summary["parameters"])
    save_checkpoint(out_model, Checkpoint(arch, model.state_dict(), masks, {"stage": "pruned", **result}))
    write_csv(out_epochs, rows or [{"epoch": 0, **{f"test_{k}": v for k, v in result.items()}}])
    write_json(out_metrics, metrics)
    remove_resume_files(out_model)
    return metrics


def _prune_and_retrain(arch: str, cfg: dict, model, names: list[str], data_source, rows: list[dict], *, seed: int,
                       device: str, out_model: str) -> dict[str, torch.Tensor]:
    """The stages of iterative pruning, each retrained (resumable); appends each epoch to ``rows``; returns
    the final masks."""
    recipe = train.Recipe.from_config(cfg["retrain"])
    params = dict(model.named_parameters())
    target = prune.prunable_sparsity(cfg["sparsity"], cfg.get("counts", "prunable"),
                                     sum(p.numel() for p in params.values()), sum(params[n].numel() for n in names))
    schedule = prune.sparsity_schedule(target, cfg.get("steps", 1))
    final_recipe = recipe
    if cfg.get("final_epochs") is not None:
        final_recipe = dataclasses.replace(recipe, epochs=cfg["final_epochs"], iterations=None)
    masks: dict[str, torch.Tensor] = {}
    for stage, sparsity in enumerate(schedule, start=1):
        masks = prune.magnitude_masks({n: params[n] for n in names}, sparsity, scope=cfg.get("scope", "global"))
        log.info("%s pruning stage %d: sparsity %.4f of %d prunable weights", arch, stage, sparsity,
                 sum(params[n].numel() for n in names))
        stage_recipe = final_recipe if stage == len(schedule) else recipe
        for row in fit(model, data_source, stage_recipe, seed=seed + stage, device=device, masks=masks, arch=arch,
                       resume_path=resume_file(out_model, stage)):
            rows.append({"stage": stage, "target_sparsity": sparsity, **row})
    return masks


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
                                        estimator=cfg["estimator"], clamp=cfg["clamp"], seed=seed, progress=True)
        details = {"samples": n, "estimator": cfg["estimator"], "clamp": cfg["clamp"]}
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


def encode_pruned(arch: str, *, model_path: str, metrics_path: str, source: dict, coding_cfg: dict, out_file: str,
                  out_metrics: str) -> dict:
    """The pruned model before quantization as a file: the 32-bit value of every kept weight plus the coded
    positions (the paper's "pruned model" row of Table 1), and its size accounting."""
    ckpt = load_checkpoint(model_path)
    if not ckpt.masks:
        raise ValueError(f"{model_path} has no pruning masks; only a pruned model can be encoded this way")
    parameters = [row["name"] for row in read_json(metrics_path)["layers"]]
    network = describe(arch, source["dataset"], source_for(source))
    state, _ = batchnorm.fold(build_model(arch, source_for(source)), ckpt.state_dict)
    qmodel = from_pruned(state, ckpt.masks, param_names=parameters, network=network)
    m = container.save(out_file, qmodel, label_code="raw", index_code=coding_cfg["index_code"],
                       index_bound=coding_cfg["index_bound"])
    write_json(out_metrics, m)
    return m
