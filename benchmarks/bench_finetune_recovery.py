"""Where the quantization loss goes: accuracy after 0, 50, 200, 1,000 fine-tuning steps and one and two
epochs, with and without BatchNorm statistics measured again, each a real file.

    python benchmarks/bench_finetune_recovery.py --arch resnet32 --model results/resnet32/pruned/model.pt \
        --data resources/data/cifar10.pt --importance-samples 5000 --bits 2.5 3 \
        --methods uniform hwkmeans [--train-unquantized both] [--params weights+biases] [--no-reestimate] \
        --json out.json

For each method and rate the pruned model is quantized once (all layers together, the pruning masks kept)
and fine-tuned with the network's config settings (``<arch>.finetune``) in one run whose shared values are
taken at each step count (the SGD momentum restarts at each, a negligible difference); every snapshot is
written as a ``.nqz`` file twice - with BatchNorm folded, as the workflow writes it, and with its statistics
measured again on ``--bn-batches`` training batches of the quantized network (``batchnorm.reestimate``;
that file stores the statistics) - and each file is decoded and evaluated on the whole test set. ``--train-unquantized both`` repeats every run
with the unquantized parameters (biases, BatchNorm's affine parameters) trained as well; ``--params``
chooses which parameters are quantized (default: the config's ``quantize.params``); ``--no-reestimate`` skips
the files with BatchNorm statistics measured again; ``--lr-policy cosine`` fine-tunes every step count anew
with the learning rate decaying to 0 over it.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from netquant import batchnorm, compress, config, importance, steps
import provenance

REPO = Path(__file__).resolve().parents[1]


def evaluate_file(arch: str, qmodel, data_source, path: Path) -> dict:
    """Write ``qmodel`` as a file, decode it and evaluate the decoded network."""
    decoded, metrics = compress.write(qmodel, path)
    model = compress.load_decoded(decoded, steps.build_model(arch, data_source))
    result = steps.test_metrics(model, data_source, "cpu")
    return {"accuracy": result["accuracy"], "loss": result["loss"], "ratio": metrics["ratio_file"],
            "file_bytes": metrics["file_bytes"]}


def run(args, method: str, bits: float, train_unquantized: bool, model, masks, h, data_source, cfg,
        folder: Path) -> list[dict]:
    """One quantization, fine-tuned in one run; every snapshot written, decoded and evaluated twice."""
    quantized = compress.quantize(model, h, method=method, bits=bits, masks=masks, include=args.params,
                                  **cfg["quantize"]["options"])
    q = quantized
    settings = config.finetune_of(cfg, args.arch, "pruned")
    finetune = {k: v for k, v in settings.items() if k not in ("batch_size", "steps")}
    finetune["lr_policy"] = args.lr_policy or finetune.get("lr_policy", "constant")
    finetune["lr"] = args.lr or finetune["lr"]
    batch_size = settings["batch_size"]
    epoch = data_source.samples_per_epoch // batch_size
    counts = sorted(set(args.steps or [0, 50, 200, 1000, epoch, 2 * epoch]))
    g = torch.Generator().manual_seed(0)
    rows, done, seconds = [], 0, 0.0
    for count in counts:
        if finetune["lr_policy"] != "constant":  # a schedule runs over its own length: each count from the start
            q, done, seconds, g = quantized, 0, 0.0, torch.Generator().manual_seed(0)
        if count > done:
            start = time.perf_counter()
            q = compress.finetune(model, q, lambda: data_source.train_epoch(batch_size, g, augment="none"),
                                  **{**finetune, "steps": count - done, "train_unquantized": train_unquantized})
            seconds += time.perf_counter() - start
            done = count
        stem = f"{method}-{bits:g}bits-{'all' if train_unquantized else 'centres'}-{count}steps"
        kept = evaluate_file(args.arch, q, data_source, folder / f"{stem}.nqz")
        row = {"method": method, "bits": bits, "params": args.params, "lr": finetune["lr"],
               "lr_policy": finetune["lr_policy"],
               "trained": "centres + unquantized" if train_unquantized else "centres",
               "steps": count, "epochs": count / epoch, "finetune_seconds": seconds,
               "accuracy": kept["accuracy"], "ratio": kept["ratio"]}
        if args.no_reestimate:
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        # the statistics of training: batches drawn as the network was trained (its augmentation)
        bn_batches = data_source.train_epoch(batch_size, torch.Generator().manual_seed(1),
                                             augment=cfg[args.arch]["train"]["augment"])
        measured = batchnorm.reestimate(steps.build_model(args.arch, data_source), q,
                                        (b for _, b in zip(range(args.bn_batches), bn_batches)),
                                        unfolded=model.state_dict())
        again = evaluate_file(args.arch, measured, data_source, folder / f"{stem}-bn.nqz")
        row.update(accuracy_bn_reestimated=again["accuracy"], ratio_bn_reestimated=again["ratio"])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--model", required=True, help="a pruned checkpoint (results/<arch>/pruned/model.pt)")
    ap.add_argument("--data", required=True, help="the prepared data (resources/data/<dataset>.pt)")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--importance-samples", type=int, default=5000, help="ggn-mc Hessian samples (hwkmeans)")
    ap.add_argument("--methods", nargs="+", default=["uniform", "hwkmeans"])
    ap.add_argument("--bits", nargs="+", type=float, default=[2.5, 3.0])
    ap.add_argument("--train-unquantized", choices=["no", "yes", "both"], default="no")
    ap.add_argument("--bn-batches", type=int, default=40)
    ap.add_argument("--params", help="which parameters are quantized (default: the config's quantize.params)")
    ap.add_argument("--no-reestimate", action="store_true", help="skip the files with BatchNorm measured again")
    ap.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the config's)")
    ap.add_argument("--lr-policy", choices=["constant", "cosine"],
                    help="fine-tuning lr schedule (default: the config's); a schedule fine-tunes each count anew")
    ap.add_argument("--steps", nargs="+", type=int, help="step counts (default: 0 50 200 1000, one and two epochs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = provenance.commit()
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    args.params = args.params or cfg["quantize"]["params"]
    data_source = steps.source_for({"dataset": args.dataset, "prepared": args.data})
    model, ckpt = steps.load_network(args.arch, args.model, data_source)
    names = compress.quantized_names(model, args.params)
    masks = {k: v for k, v in ckpt.masks.items() if k in names}
    start = time.perf_counter()
    icfg, h = cfg["importance"], None
    if set(args.methods) - {"kmeans"}:
        h = importance.hessian_diagonal(model, data_source.train_sample(args.importance_samples, icfg["batch_size"], 0),
                                        args.importance_samples, estimator=icfg["estimator"], clamp=icfg["clamp"])
    importance_seconds = time.perf_counter() - start
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.train_unquantized]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for bits in args.bits:
                for train_unquantized in modes:
                    rows += run(args, method, bits, train_unquantized, model, masks,
                                h if method != "kmeans" else None, data_source, cfg, Path(tmp))
    result = {"model": args.model, "model_accuracy": ckpt.meta.get("accuracy"), "arch": args.arch,
              "importance": f"ggn-mc, {args.importance_samples} samples ({importance_seconds:.0f} s)",
              "finetune": config.finetune_of(cfg, args.arch, "pruned"), "bn_batches": args.bn_batches, "threads": args.threads,
              "machine": platform.platform(), "torch": torch.__version__, "commit": commit, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
