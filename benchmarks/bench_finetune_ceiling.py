"""Does any fine-tuning recipe lift a quantized pruned network back to the pruned model's accuracy?

    python benchmarks/bench_finetune_ceiling.py --model results/resnet32/pruned/model.pt \
        --importance results/resnet32/pruned/importance/hessian-50000.pt --data resources/data/cifar10.pt \
        [--step-sizes 0.0173] [--seeds 0 1] [--threads 2] --json out.json

The pruned model is quantized by uniform quantization (Hessian-weighted centres, all layers together, the
pruning masks kept, as Table 1's uniform row) at each step of ``--step-sizes`` and fine-tuned by each
recipe, once per seed; every result is written as a ``.nqz`` file, decoded and evaluated on the whole test
set. The recipes:

- ``config``: the config's settings for the pruned model's points (``<arch>.finetune``, ``pruned_steps``);
- ``lr-<x>``: the same with learning rate x;
- ``crop-flip``: the training batches augmented as the network was trained;
- ``distill-T<t>``: the loss is the KL divergence from the pruned model's outputs at temperature t (scaled
  by t^2), the pruned model being the teacher; ``distill+ce-T<t>``: half that, half cross-entropy;
- ``layer``: one codebook per layer (``scope: layer``) with the config's settings.

A control row quantizes with a step of 1e-5 (the format's precision only) and fine-tunes with ``config``:
what fine-tuning alone does to the pruned model.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from netquant import steps
from netquant.finetune import finetune_codebooks
from netquant.measure import write_files
from netquant.quantize.network import quantize_network

import provenance
import pruned_case

RECIPES = ("config", "lr-0.002", "lr-0.0005", "crop-flip", "distill-T2", "distill-T4", "distill+ce-T2", "layer")


def recipe_settings(name: str, base: dict) -> tuple[dict, str, str, float | None, float]:
    """(fine-tuning settings, scope, augmentation, distillation temperature or None, cross-entropy weight)."""
    settings, scope, augment, temperature, ce_weight = dict(base), "all", "none", None, 1.0
    if name.startswith("lr-"):
        settings["lr"] = float(name[3:])
    elif name == "crop-flip":
        augment = "crop-flip"
    elif name.startswith("distill"):
        temperature, ce_weight = float(name.split("-T")[1]), 0.5 if "+ce" in name else 0.0
    elif name == "layer":
        scope = "layer"
    elif name != "config":
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return settings, scope, augment, temperature, ce_weight


def distilled_batches(batches, teacher: torch.nn.Module):
    """(inputs, targets) with the teacher's logits packed before the labels: [B, classes + 1]."""
    for inputs, labels in batches:
        with torch.no_grad():
            logits = teacher(inputs)
        yield inputs, torch.cat([logits, labels[:, None].float()], 1)


def distillation_loss(temperature: float, ce_weight: float):
    def loss(outputs: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        logits, labels = packed[:, :-1], packed[:, -1].long()
        kd = F.kl_div(F.log_softmax(outputs / temperature, 1), F.log_softmax(logits / temperature, 1),
                      log_target=True, reduction="batchmean") * temperature ** 2
        return (1 - ce_weight) * kd + ce_weight * F.cross_entropy(outputs, labels)
    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pruned_case.add_arguments(ap)
    ap.add_argument("--step-sizes", type=float, nargs="+", default=[0.0173])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = provenance.commit()
    case = pruned_case.load(args)
    cfg, base, batch_size, source = case.cfg, case.finetune, case.batch_size, case.source
    model, hessian, include = case.model, case.hessian, case.include
    teacher = copy.deepcopy(model).eval()
    coding = cfg["coding"]
    pruned_accuracy = steps.test_metrics(model, source, "cpu")["accuracy"]
    print(json.dumps({"pruned model": pruned_accuracy}), flush=True)

    cases = [(1e-5, "config")] + [(step, recipe) for step in args.step_sizes for recipe in args.recipes]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for step, recipe in cases:
            settings, scope, augment, temperature, ce_weight = recipe_settings(recipe, base)
            qmodel = quantize_network(model, hessian, method="uniform", rate={"step": step}, scope=scope,
                                      include=include, masks=case.masks, options=cfg["quantize"]["options"])
            for seed in args.seeds if step > 1e-5 else args.seeds[:1]:
                generator = torch.Generator().manual_seed(seed)

                def batches():
                    plain = source.train_epoch(batch_size, generator, augment=augment)
                    return plain if temperature is None else distilled_batches(plain, teacher)

                extra = {} if temperature is None else {"loss_fn": distillation_loss(temperature, ce_weight)}
                start = time.perf_counter()
                tuned, _ = finetune_codebooks(copy.deepcopy(model), qmodel, batches, **settings, **extra)
                seconds = time.perf_counter() - start
                decoded, metrics, _ = write_files(f"{folder}/file", tuned, coding)
                network = copy.deepcopy(model)
                network.load_state_dict(decoded.state_dict())
                rows.append({"step": step, "recipe": recipe, "seed": seed, "finetune_seconds": round(seconds, 1),
                             "accuracy": steps.test_metrics(network, source, "cpu")["accuracy"],
                             "ratio": metrics["ratio_file"]})
                print(json.dumps(rows[-1]), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "model": args.model, "pruned_accuracy": pruned_accuracy, "importance": args.importance,
        "finetune": {**base, "batch_size": batch_size}, "include": include, "coding": coding,
        "commit": commit, "machine": platform.platform(), "torch": torch.__version__, "threads": args.threads,
        "command": provenance.command_line("bench_finetune_ceiling.py", args),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
