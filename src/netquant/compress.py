"""Compress your own PyTorch model: the paper's methods (and ours) on any ``nn.Module`` and data loader.

    from netquant import compress
    h = compress.importance(model, train_loader, kind="hessian", samples=1000)     # or "adam", or None
    q = compress.quantize(model, h, method="hwkmeans", bits=3)                      # or k=..., step=, lam=
    q = compress.finetune(model, q, train_loader, steps=200, lr=1e-3)               # the shared values
    metrics = compress.save(q, "model.nqz")                                         # ratio from the file
    decoded = compress.load("model.nqz", model_like)                                # a runnable network
    compress.evaluate(decoded, test_loader)                                         # {"loss", "accuracy"}
    compress.largest_ratio(model, h, train_loader, test_loader, method="uniform", floor=99.0, folder="out")

Which parameters are quantized (``include``): ``"weights"`` (default: every parameter with two or more
dimensions - convolutions, depthwise convolutions, linear layers, embeddings - all layers together, the
paper's setting), ``"weights+biases"``, or ``"all"`` (BatchNorm and biases too). Everything else is
stored as is (32-bit). Pruned weights are recognised (``pruned="zeros"``, default): in a quantized tensor
of which at least 10% are exact zeros, the zeros are positions of removed weights - coded as positions,
never quantized, exactly 0 after decoding.

A file written by the workflow or by :func:`save` with a ``network`` description says what network it
holds, so that :func:`evaluate_file` - and ``python -m netquant evaluate FILE.nqz --data-root DIR`` - can
rebuild it with nothing but the file and the data.
"""

from __future__ import annotations

import copy
import importlib
import os
from typing import Any

from typing import Iterable

import torch
from torch import nn

from netquant import container, data, models, search, train
from netquant import importance as estimators
from netquant import quantize as quantizers
from netquant.finetune import finetune_codebooks
from netquant.measure import measure_rate
from netquant.quantize.network import (check_importance, network_rate_grid, pruning_masks,
                                       quantize_network, quantized_and_masks, quantized_names)
from netquant.qmodel import QuantizedModel
from netquant.vocabulary import DATASETS, DEFAULT_ESTIMATOR, FOLDER_DATASETS


DESCRIPTION_RANGES = {"num_classes": (1, 1_000_000), "in_channels": (1, 64), "input_size": (8, 4096)}


def build_from_description(network: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None = None, *,
                           arch: str | None = None) -> nn.Module:
    """An (untrained) network of the described architecture and input shape.

    A file may name only netquant's networks and torchvision's models (``torchvision:<model>``): it never
    chooses code to run. ``arch``: the caller's own choice (``package.module:callable`` or any name
    :func:`build_named` takes), used instead of the file's. ``shapes`` (state_dict name -> shape, e.g. a
    decoded file's): the description is checked against them on a network built without memory
    (``torch.device("meta")``) before the real one is built, so a description can never make it allocate
    more than the file's own tensors.
    """
    if arch is None:
        if "arch" not in network:
            raise ValueError("the file does not say which architecture it holds (written by netquant < 0.2, or by "
                             "a program that gave no network description); name it with --arch NAME, or build "
                             "the model yourself and pass it: load_model(FILE, model=...)")
        arch = str(network["arch"])
        if arch not in models.ARCHS and not arch.startswith("torchvision:"):
            raise ValueError(f"the file names the architecture {arch!r}; a file may name only "
                             f"{', '.join(models.ARCHS)} or torchvision:<model>, never code to import: if you "
                             f"trust it, name it yourself (python -m netquant evaluate FILE --arch {arch}, or "
                             "load_model(FILE, model=...))")
    sizes = {}
    for key, (low, high) in DESCRIPTION_RANGES.items():
        value = network.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise ValueError(f"the file's network description has {key} = {value!r}; expected an integer in "
                             f"[{low}, {high}]")
        sizes[key] = value
    if arch not in models.ARCHS:
        sizes = {"num_classes": sizes["num_classes"]}
    if shapes is not None:
        with torch.device("meta"):
            _check_shapes(_build(arch, sizes), shapes, network)
    return _build(arch, sizes)


def _build(arch: str, sizes: dict[str, int | None]) -> nn.Module:
    if arch in models.ARCHS:
        return models.build(arch, **sizes)
    return build_named(arch, num_classes=sizes.get("num_classes"))


def _check_shapes(model: nn.Module, shapes: dict[str, tuple[int, ...]], network: dict[str, Any]) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    described = ", ".join(f"{k} {network[k]}" for k in ("arch", *DESCRIPTION_RANGES) if k in network)
    for name, shape in shapes.items():
        if name not in expected:
            raise ValueError(f"the file holds {name!r}, which the described network ({described}) does not have")
        if tuple(shape) != expected[name]:
            raise ValueError(f"the file's {name!r} has shape {tuple(shape)}, the described network ({described}) "
                             f"needs {expected[name]}: the description does not match the file's tensors")
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"the described network ({described}) needs {missing[0]!r} (and {len(missing) - 1} more), "
                         "which the file does not hold")


def build_named(name: str, *, num_classes: int | None = None) -> nn.Module:
    """A network by name: one of the paper's (``lenet5``, ...), ``torchvision:<model>`` (e.g.
    ``torchvision:resnet18``), or ``package.module:callable`` returning an ``nn.Module``."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name in models.ARCHS:
        return models.build(name, **kwargs)
    if name.startswith("torchvision:"):
        import torchvision

        model_name = name.removeprefix("torchvision:")
        if model_name not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no model {model_name!r}; see torchvision.models.list_models()")
        return torchvision.models.get_model(model_name, weights=None, **kwargs)
    module_name, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown architecture {name!r}: give one of {', '.join(models.ARCHS)}, "
                         "torchvision:<model>, or package.module:callable")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {name!r} ({exc}); give package.module:callable") from exc
    return factory(**kwargs)


def load_model(path: str | os.PathLike, model: nn.Module | None = None, *,
               arch: str | None = None) -> tuple[nn.Module, QuantizedModel]:
    """The network decoded from the file ``path``: ``model`` (any nn.Module of the right architecture) with
    the decoded values loaded, or, without ``model``, one built from the file's network description (or
    from ``arch``, see :func:`build_from_description`)."""
    qmodel = container.read(path)
    return load_decoded(qmodel, model, arch=arch), qmodel


def load_decoded(qmodel: QuantizedModel, model: nn.Module | None = None, *, arch: str | None = None) -> nn.Module:
    """A decoded file's network: its values loaded into ``model`` or into one built from its description."""
    if model is None:
        model = build_from_description(qmodel.network, qmodel.shapes(), arch=arch)
    model.load_state_dict(qmodel.state_dict())
    return model


def test_source(network: dict[str, Any], *, data_root: str | os.PathLike | None = None,
                prepared: str | os.PathLike | None = None):
    """The test data of the file's dataset: from ``prepared`` (the workflow's ``resources/data/*.pt``),
    else read from ``data_root`` (torchvision's layout; the ImageNet folder for imagenet)."""
    dataset = network.get("dataset")
    if dataset is None:
        raise ValueError("the file does not say which dataset its network was trained on")
    if dataset not in DATASETS:
        raise ValueError(f"the file names the dataset {dataset!r}; netquant evaluates on {', '.join(DATASETS)}")
    if prepared is not None:
        splits = data.load_prepared(prepared)
        return data.TensorSource(splits["train"], splits["test"])
    if data_root is None:
        raise ValueError(f"give the folder that holds {dataset} (data_root), or a prepared tensor file")
    if dataset in FOLDER_DATASETS:
        return data.FolderSource(data_root)
    if dataset.startswith("synthetic-"):
        raise ValueError(f"{dataset} is generated by the workflow: pass its prepared file "
                         f"(resources/data/{dataset}.pt) instead of a data_root")
    splits = data.prepare(dataset, data_root)
    return data.TensorSource(splits["train"], splits["test"])


def _check_data_fits(network: dict[str, Any], source, where) -> None:
    """The test images must have the shape and classes the file's network was built for."""
    if network.get("dataset") in FOLDER_DATASETS:
        return
    channels, size = source.input_shape
    described = (network.get("in_channels", channels), network.get("input_size", size),
                 network.get("num_classes", source.num_classes))
    if described != (channels, size, source.num_classes):
        raise ValueError(f"the file's network ({network.get('dataset')}: {described[0]}x{described[1]}x{described[1]} "
                         f"images, {described[2]} classes) does not fit the data of {where} ({channels}x{size}x{size} "
                         f"images, {source.num_classes} classes): give the {network.get('dataset')} data")


def evaluate_file(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
                  prepared: str | os.PathLike | None = None, device: str = "auto",
                  arch: str | None = None) -> dict[str, Any]:
    """Rebuild the network of a ``.nqz`` file, evaluate it on its test set and measure the file.
    ``arch``: build this architecture instead of the one the file names (see :func:`build_from_description`).

    Returns {"file", "arch", "dataset", "accuracy" (%), "loss", "top5" (ImageNet), "ratio" (32 N / file
    bits), "file_bytes", "n_params"}.
    """
    model, qmodel = load_model(path, arch=arch)
    network = qmodel.network
    source = test_source(network, data_root=data_root, prepared=prepared)
    _check_data_fits(network, source, prepared or data_root)
    topk = (1, 5) if network.get("dataset") in FOLDER_DATASETS else (1,)
    result = train.evaluate(model, source.test_batches(), device=train.resolve_device(device), topk=topk)
    m = container.metrics(path)
    return {"file": str(path), "arch": arch or network["arch"], "dataset": network["dataset"], **result,
            "ratio": m["ratio_file"], "file_bytes": m["file_bytes"], "n_params": m["n_params"]}



# ------------------------------------------------------------------------------------ any model

def importance(model: nn.Module, loader, *, kind: str = "hessian", samples: int = 1000,
               estimator: str = DEFAULT_ESTIMATOR, adam_steps: int = 1000, adam_lr: float = 1e-4,
               device: str = "auto") -> dict[str, torch.Tensor] | None:
    """The importance of every parameter: ``"hessian"`` (diagonal Hessian of the cross-entropy over
    ``samples`` samples of ``loader``, by ``estimator``), ``"adam"`` (square root of Adam's second moments
    after ``adam_steps`` steps on a copy of the model, paper section 3.5) or ``None`` / ``"none"``.

    ``loader``: (inputs, targets) batches, e.g. a DataLoader. The model itself is never modified.
    """
    if kind in (None, "none"):
        return None
    device = train.resolve_device(device)
    work = copy.deepcopy(model).to(device)
    if kind == "hessian":
        return estimators.hessian_diagonal(work, loader, samples, estimator=estimator)
    if kind == "adam":
        h, _ = estimators.adam_second_moments(work, loader, steps=adam_steps, lr=adam_lr,
                                              masks=pruning_masks(work, quantized_names(work, "all")) or None)
        return h
    raise ValueError(f"kind must be 'hessian', 'adam' or None, got {kind!r}")


def quantize(model: nn.Module, importance: dict[str, torch.Tensor] | None = None, *, method: str,
             bits: float | None = None, k: int | None = None, step: float | None = None, lam: float | None = None,
             scope: str = "all", include: str = "weights", pruned: str = "zeros",
             masks: dict[str, torch.Tensor] | None = None, seed: int = 0, network: dict[str, Any] | None = None,
             fold_batchnorm: bool = True, **options) -> QuantizedModel:
    """Quantize ``model``'s parameters (``include``) with ``method`` at one rate: ``bits`` (the average
    codeword length the method aims at, as in the paper's figures), or the method's own ``k``, ``step`` or
    ``lam``. ``scope``: "all" (one codebook for all layers, the paper) or "layer". ``pruned``: "zeros"
    (see the module docstring) or "none"; ``masks`` (name -> bool tensor, True = kept, e.g. a pruning
    checkpoint's) gives the pruned positions instead. ``network``: a description stored in the file.
    ``options``: see :func:`netquant.quantize.quantize` (``ecsq_k`` is ECSQ's initial k, ``bins`` the DP
    solvers' grid). ``fold_batchnorm``: BatchNorm running statistics folded into the layers' affine
    parameters (:mod:`netquant.batchnorm`; the eval-mode network is the same, and its file does not store
    the statistics). See :func:`netquant.quantize.quantize_network`.
    """
    if bits is not None and not bits >= 1:
        raise ValueError(f"bits = {bits!r}: an average codeword length below 1 bit leaves fewer than 2 shared "
                         "values for the whole network; give bits >= 1")
    if k is not None and not k >= 2:
        raise ValueError(f"k = {k!r}: one shared value for the whole network is no network; give k >= 2")
    given = {key: value for key, value in {"k": k, "step": step, "lam": lam}.items() if value is not None}
    if bits is not None and given:
        raise ValueError("give either bits or the method's own rate (k, step or lam), not both")
    if bits is not None:
        names, kept_masks = quantized_and_masks(model, include, pruned, masks)
        check_importance(importance, names)
        rate = network_rate_grid(model, importance, method=method, names=names, masks=kept_masks,
                                            bits_min=bits, bits_max=bits, points=1, fold_batchnorm=fold_batchnorm,
                                            zero_center=options.get("zero_center", True))[0]
        given = {quantizers.rate_parameter(method): rate}
    return quantize_network(model, importance, method=method, rate=given, scope=scope, include=include,
                                       pruned=pruned, masks=masks, seed=seed, network=network,
                                       fold_batchnorm=fold_batchnorm, options=options)


def finetune(model: nn.Module, qmodel: QuantizedModel, loader, *, steps: int, lr: float, momentum: float = 0.9,
             device: str = "auto", **options) -> QuantizedModel:
    """Fine-tune the shared values of ``qmodel`` on ``loader`` (labels fixed); ``model`` is a network of
    its architecture (its values are replaced). See :func:`netquant.finetune.finetune_codebooks`."""
    tuned, _ = finetune_codebooks(copy.deepcopy(model), qmodel, loader, steps=steps, lr=lr, momentum=momentum,
                                  device=train.resolve_device(device), **options)
    return tuned


def largest_ratio(model: nn.Module, importance: dict[str, torch.Tensor] | None, train_loader, test_loader, *,
                  method: str, floor: float, folder: str | os.PathLike, bits: Iterable[float] = (1, 2, 3, 4, 5, 6),
                  max_probes: int = 6, finetune_steps: int = 200, lr: float = 1e-3, device: str = "auto",
                  **quantize_options) -> dict[str, Any]:
    """The largest compression ratio whose decoded, fine-tuned file has a test accuracy >= ``floor`` (%).

    Each probe quantizes at one rate, fine-tunes the shared values, writes ``folder/<rate>=<value>.nqz`` and
    evaluates what the file decodes to. The probes start at the rates of ``bits`` (average codeword
    lengths); the search then bisects the method's rate parameter between the largest-ratio probe that
    meets the floor and the next one that does not (:func:`netquant.search.search`), with at most
    ``max_probes`` more probes. ``train_loader`` is iterated once per probe (give a callable returning a
    fresh epoch to vary the batches). Returns {"best": the chosen probe (None if none meets the floor),
    "probes": every probe}, each probe a dict with "rate", "accuracy", "ratio", "file".
    """
    os.makedirs(folder, exist_ok=True)
    include, pruned = quantize_options.pop("include", "weights"), quantize_options.pop("pruned", "zeros")
    names, masks = quantized_and_masks(model, include, pruned, quantize_options.pop("masks", None))
    check_importance(importance, names)
    fold = quantize_options.pop("fold_batchnorm", True)
    settings = {"include": include, "masks": masks, "fold_batchnorm": fold,
                "scope": quantize_options.pop("scope", "all"), "seed": quantize_options.pop("seed", 0),
                "network": quantize_options.pop("network", None), "options": quantize_options}
    rate_name = quantizers.rate_parameter(method)
    grid = sorted({network_rate_grid(model, importance, method=method, names=names, masks=masks,
                                                bits_min=b, bits_max=b, points=1, fold_batchnorm=fold,
                                                zero_center=quantize_options.get("zero_center", True))[0]
                   for b in bits})

    def measure(value: float) -> search.Probe:
        return measure_rate(model, importance, {rate_name: value}, method=method, quantize=settings,
                            finetune={"steps": finetune_steps, "lr": lr}, train_batches=lambda seed: train_loader,
                            seeds=[0], test=lambda network: evaluate(network, test_loader, device=device),
                            stem=lambda seed: os.path.join(folder, f"{rate_name}={value:.6g}"), coding={},
                            device=train.resolve_device(device)).probe()

    coarse = [measure(value) for value in grid]
    chosen, made = search.search(measure, coarse, floor, max_probes=max_probes, integer=quantizers.rate_is_integer(method))
    as_dict = lambda p: {"rate": p.rate, "accuracy": p.accuracy, "ratio": p.ratio, **p.info}  # noqa: E731
    return {"best": as_dict(chosen) if chosen else None, "probes": [as_dict(p) for p in coarse + made]}


def save(qmodel: QuantizedModel, path: str | os.PathLike, *, label_code: str = "huffman",
         index_code: str = "deep-compression", index_bound: int = container.DEFAULT_INDEX_BOUND) -> dict[str, Any]:
    """Write the compressed file; returns its metrics (``ratio_file`` = 32 N / bits of the file)."""
    return write(qmodel, path, label_code=label_code, index_code=index_code, index_bound=index_bound)[1]


def write(qmodel: QuantizedModel, path: str | os.PathLike, *, label_code: str = "huffman",
          index_code: str = "deep-compression", index_bound: int = container.DEFAULT_INDEX_BOUND,
          encoding: container.Encoding | None = None) -> tuple[QuantizedModel, dict[str, Any]]:
    """:func:`save`, also returning what the file decodes to (it is decoded once, and checked bit-exact,
    before its bytes are written). ``encoding``: one :class:`netquant.container.Encoding` of ``qmodel``
    shared by several files of it in different codes, so that each stream is computed once."""
    return container.write(path, qmodel, label_code=label_code, index_code=index_code, index_bound=index_bound,
                           encoding=encoding)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """A runnable network decoded from ``path``: ``model`` with the decoded values (any network of the
    file's architecture), or one built from the file's own description."""
    return load_model(path, model)[0]


def evaluate(model: nn.Module, loader, *, device: str = "auto", topk: tuple[int, ...] = (1,)) -> dict[str, float]:
    """Mean cross-entropy and top-k accuracies (%) of ``model`` on ``loader``."""
    return train.evaluate(model, loader, device=train.resolve_device(device), topk=topk)


def image_folder_loaders(root: str | os.PathLike, *, image_size: int = 224, batch_size: int = 64, seed: int = 0):
    """(train, test) loaders over ``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageFolder layout),
    resized and centre-cropped to ``image_size``, ImageNet's normalisation."""
    from pathlib import Path

    from torchvision import datasets, transforms

    for split in ("train", "val"):
        if not (Path(root) / split).is_dir():
            raise ValueError(f"{root} has no {split}/ folder; it must hold train/<class>/* and val/<class>/*")
    mean, std = data.STATS["imagenet"]
    tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    g = torch.Generator().manual_seed(seed)
    train_set = datasets.ImageFolder(str(Path(root) / "train"), tf)
    test_set = datasets.ImageFolder(str(Path(root) / "val"), tf)
    return (torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g),
            torch.utils.data.DataLoader(test_set, batch_size=batch_size))


def compress_command(args) -> dict[str, Any]:
    """``python -m netquant compress``: a model from a name and a weights file, data from an image folder
    or a prepared dataset, compressed into ``args.out``; returns the file's ratio and its decoded accuracy."""
    if args.images:
        train_loader, test_loader = image_folder_loaders(args.images, image_size=args.image_size,
                                                         batch_size=args.batch_size)
    elif args.dataset:
        splits = data.prepare(args.dataset, args.data_root)
        source = data.TensorSource(splits["train"], splits["test"])
        g = torch.Generator().manual_seed(0)
        train_loader = lambda: source.train_epoch(args.batch_size, g)  # noqa: E731 - a fresh epoch per call
        test_loader = source.test_batches()
    else:
        raise ValueError("give the data: --images DIR (train/ and val/ class folders) or --dataset mnist|cifar10 "
                         "with --data-root DIR")
    model = build_named(args.arch, num_classes=args.num_classes)
    if args.weights:
        model.load_state_dict(models._weights_file(args.weights, args.arch))
    model.eval()
    batches = train_loader() if callable(train_loader) else train_loader
    h = importance(model, batches, kind=args.importance, samples=args.samples)
    rate = {key: getattr(args, key) for key in ("bits", "k", "step", "lam") if getattr(args, key) is not None}
    network = {"arch": args.arch, "num_classes": args.num_classes}
    searched = {}
    if args.floor is not None:
        if rate:
            raise ValueError("give either --floor (search for the largest ratio) or a rate (--bits, --k, ...)")
        found = largest_ratio(model, h, train_loader, test_loader, method=args.method, floor=args.floor,
                              folder=f"{args.out}.probes", max_probes=args.max_probes,
                              finetune_steps=args.finetune_steps, lr=args.lr, scope=args.scope,
                              include=args.include, network=network)
        if found["best"] is None:
            raise ValueError(f"no probe reaches {args.floor}% (best {max(p['accuracy'] for p in found['probes']):.2f}%,"
                             f" files in {args.out}.probes/): lower --floor or fine-tune longer (--finetune-steps)")
        q = container.read(found["best"]["file"])
        searched = {"probes": found["probes"]}
    else:
        q = quantize(model, h, method=args.method, scope=args.scope, include=args.include, network=network, **rate)
        if args.finetune_steps:
            q = finetune(model, q, train_loader, steps=args.finetune_steps, lr=args.lr)
    m = save(q, args.out)
    result = evaluate(load(args.out, model), test_loader)
    return {"file": str(args.out), "ratio": m["ratio_file"], "file_bytes": m["file_bytes"],
            "n_params": m["n_params"], "bits_per_weight": m["bits_per_weight"]["in_file"], **result, **searched}
