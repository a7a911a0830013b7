"""Compare training recipes for LeNet-5 (baseline + 91% pruning) and a short ResNet-32 schedule.

    python benchmarks/explore_recipes.py --variant caffe --data resources/data/mnist.pt --device cuda

Prints one JSON line per variant: accuracies and wall times. Used to choose the default (cpu) recipes.
"""

import argparse
import json
import time

import torch

from netquant import data, models, prune, train

VARIANTS = {
    "caffe": dict(lr=0.01, batch_size=64, iterations=10000, momentum=0.9, weight_decay=5e-4, lr_policy="inv",
                  gamma=1e-4, power=0.75),
    "caffe-shift": dict(lr=0.01, batch_size=64, iterations=10000, momentum=0.9, weight_decay=5e-4, lr_policy="inv",
                        gamma=1e-4, power=0.75, augment="shift"),
    "caffe-shift-20k": dict(lr=0.01, batch_size=64, iterations=20000, momentum=0.9, weight_decay=5e-4,
                            lr_policy="inv", gamma=1e-4, power=0.75, augment="shift"),
}


def run_lenet(name, splits, device, prune_steps, prune_iters):
    torch.manual_seed(0)
    recipe = train.Recipe(**VARIANTS[name])
    g = torch.Generator().manual_seed(0)
    tr, te = splits["train"], splits["test"]
    ev = lambda m: train.evaluate(m, data.batches(te, 1000), device=device)
    model = models.build("lenet5")
    t = time.time()
    train.train(model, lambda e: data.batches(tr, recipe.batch_size, shuffle=True, generator=g, augment=recipe.augment),
                len(tr), recipe, device=device)
    base = ev(model)["accuracy"]
    t_base = time.time() - t
    names = prune.prunable_names(model)
    params = dict(model.named_parameters())
    out = {"variant": name, "baseline": base, "baseline_s": t_base}
    retrain = train.Recipe(**{**VARIANTS[name], "iterations": prune_iters, "epochs": None, "lr": VARIANTS[name]["lr"] / 2})
    for s, sp in enumerate(prune.sparsity_schedule(0.91, prune_steps)):
        masks = prune.magnitude_masks({n: params[n] for n in names}, sp)
        train.train(model, lambda e: data.batches(tr, retrain.batch_size, shuffle=True, generator=g,
                                                  augment=retrain.augment), len(tr), retrain, masks=masks, device=device)
        out[f"stage{s + 1}_sparsity"] = sp
        out[f"stage{s + 1}"] = ev(model)["accuracy"]
    out["total_s"] = time.time() - t
    return out


def run_resnet(splits, device, epochs):
    torch.manual_seed(0)
    recipe = train.Recipe(lr=0.1, batch_size=128, epochs=epochs, momentum=0.9, weight_decay=1e-4, lr_policy="cosine",
                          augment="crop-flip")
    g = torch.Generator().manual_seed(0)
    model = models.build("resnet32")
    t = time.time()
    hist = train.train(model, lambda e: data.batches(splits["train"], 128, shuffle=True, generator=g, augment="crop-flip"),
                       len(splits["train"]), recipe, device=device,
                       evaluate_fn=lambda m: train.evaluate(m, data.batches(splits["test"], 1000), device=device))
    return {"variant": f"resnet32-cosine-{epochs}ep", "accuracy": hist[-1]["test_accuracy"],
            "per_epoch_s": (time.time() - t) / epochs, "curve": [round(h["test_accuracy"], 2) for h in hist]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prune-steps", type=int, default=3)
    ap.add_argument("--prune-iters", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    splits = data.load_prepared(a.data)
    if a.variant == "resnet32":
        print(json.dumps(run_resnet(splits, a.device, a.epochs)), flush=True)
    else:
        print(json.dumps(run_lenet(a.variant, splits, a.device, a.prune_steps, a.prune_iters)), flush=True)
