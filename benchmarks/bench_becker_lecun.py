"""The paper's Hessian estimator (Becker & Le Cun's diagonal back-propagation) against the exact
Gauss-Newton diagonal, on trained networks: cost, rank agreement, and what each does to Hessian-weighted
k-means.

    python benchmarks/bench_becker_lecun.py --arch resnet32 --model results/resnet32/baseline/model.pt \\
        --data resources/data/cifar10.pt [--samples 1000] [--threads 2] [--json out.json]

Prints, for the same ``--samples`` training samples (seeded choice, unaugmented):
- seconds of each estimator and of one gradient pass over those samples, and the ratio to it;
- Spearman rank correlation of each estimate with the exact diagonal over all parameters, and per layer
  (median), and the ratio of its per-layer mean to the exact one's (min / median / max): the scale across
  layers is what weighting all layers together depends on;
- test accuracy of Hessian-weighted k-means with each diagonal, all layers together, k = 4, 8, 16, 32
  (2 to 5 bits fixed-length), no fine-tuning, of the decoded network.

Estimators: ``becker-lecun`` (the paper's), ``ggn`` (exact Gauss-Newton diagonal, the reference) and
``ggn-mc`` (its Monte-Carlo estimate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from netquant import data, importance, quantize, train
from netquant.steps import load_network


ESTIMATORS = ("ggn", "becker-lecun", "ggn-mc")  # the exact diagonal first: the others are compared with it


def seconds(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--model", required=True, help="a netquant checkpoint (results/<net>/<variant>/model.pt)")
    ap.add_argument("--data", required=True, help="the prepared data (resources/data/<dataset>.pt)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load_prepared(args.data)
    source = data.TensorSource(splits["train"], splits["test"])
    model, ckpt = load_network(args.arch, args.model, source)
    model.eval()
    sample = list(source.train_sample(args.samples, args.batch_size, seed=0))

    def gradient_pass():
        for x, y in sample:
            torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))

    gradient_pass()  # warm-up
    t_grad, _ = seconds(gradient_pass)
    estimates, cost = {}, {}
    for estimator in ESTIMATORS:
        cost[estimator], estimates[estimator] = seconds(lambda: importance.hessian_diagonal(
            model, sample, args.samples, estimator=estimator, clamp=1e-8))
    flat = {k: torch.cat([v.flatten() for v in h.values()]).numpy() for k, h in estimates.items()}
    exact = estimates["ggn"]
    agreement = {}
    for estimator in ESTIMATORS[1:]:
        h = estimates[estimator]
        per_layer = [spearmanr(h[n].flatten().numpy(), exact[n].flatten().numpy()).statistic
                     for n in exact if exact[n].numel() > 1]
        scale = [float(h[n].mean() / exact[n].mean()) for n in exact]
        agreement[estimator] = {"spearman_all": float(spearmanr(flat[estimator], flat["ggn"]).statistic),
                                "spearman_layer_median": statistics.median(per_layer),
                                "layer_mean_ratio": [min(scale), statistics.median(scale), max(scale)]}
    names = [n for n, _ in model.named_parameters()]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = {k: v for k, v in ckpt.masks.items() if k in names}
    accuracy = {}
    for estimator, h in estimates.items():
        for k in (4, 8, 16, 32):
            qmodel = quantize.quantize_model(state, param_names=names, masks=masks, importance=h,
                                             method="hwkmeans", k=k, scope="all", parameters=names)
            model.load_state_dict(qmodel.state_dict())
            accuracy[f"{estimator} k={k}"] = train.evaluate(model, source.test_batches())["accuracy"]
    model.load_state_dict(state)
    result = {"arch": args.arch, "model": args.model, "samples": args.samples, "threads": args.threads,
              "gradient_pass_s": t_grad, "seconds": cost,
              "cost_vs_gradient": {k: v / t_grad for k, v in cost.items()},
              "agreement_with_ggn": agreement, "hwkmeans_accuracy": accuracy,
              "unquantized_accuracy": train.evaluate(model, source.test_batches())["accuracy"]}
    print(f"{args.arch} ({args.model}), {args.samples} samples, {args.threads} thread(s)")
    print(f"  one gradient pass: {t_grad:.1f} s")
    for k in cost:
        print(f"  {k:<13} {cost[k]:8.1f} s = {cost[k] / t_grad:5.2f} gradient passes")
    for k, a in agreement.items():
        low, mid, high = a["layer_mean_ratio"]
        print(f"  {k:<13} vs ggn: Spearman {a['spearman_all']:.3f} (all), {a['spearman_layer_median']:.3f} "
              f"(per layer, median); per-layer mean / ggn's: min {low:.2g}, median {mid:.2g}, max {high:.2g}")
    print(f"  Hessian-weighted k-means, no fine-tuning (unquantized {result['unquantized_accuracy']:.2f}%):")
    for key, value in accuracy.items():
        print(f"    {key:<18} {value:6.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
