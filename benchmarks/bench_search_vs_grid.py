"""The operating-point search against a dense grid: the largest ratio at an accuracy floor, and what it costs.

    python benchmarks/bench_search_vs_grid.py --arch lenet5 --model results/lenet5/pruned/model.pt \
        --importance results/lenet5/pruned/importance/hessian-50000.pt --data resources/data/mnist.pt \
        --floor 99.27 [--method uniform] [--grid 40] [--coarse 8] [--max-probes N] [--json out.json]

Both measure real files: each point is quantized, fine-tuned (the config's settings of the network, one
seed), written and evaluated as decoded, exactly as the workflow's sweeps (``netquant.sweeps``). The grid
spreads ``--grid`` points over the default rate range; the search starts from ``--coarse`` of them and
refines with at most ``--max-probes`` probes (default: the config's ``search.max_probes``;
``netquant.search``). Prints the best ratio meeting the floor of each, how many fine-tuned evaluations each
took, and after how many evaluations the search had reached its operating point.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from netquant import config, reference, search, sweeps
from netquant.quantize.network import network_rate_grid

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--importance", help="the importance file of the model (none: unweighted)")
    ap.add_argument("--data", required=True, help="the prepared data (resources/data/<dataset>.pt)")
    ap.add_argument("--dataset", default=None, help="default: mnist for lenet5, cifar10 for resnet32")
    ap.add_argument("--method", default="uniform")
    ap.add_argument("--floor", type=float, required=True)
    ap.add_argument("--grid", type=int, default=40)
    ap.add_argument("--coarse", type=int, default=8)
    ap.add_argument("--max-probes", type=int, help="default: the config's search.max_probes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    max_probes = cfg["search"]["max_probes"] if args.max_probes is None else args.max_probes
    rates = cfg[args.arch].get("rates", cfg["quantize"]["rates"])
    dataset = args.dataset or {"lenet5": "mnist", "resnet32": "cifar10"}[args.arch]
    curve = sweeps.open_curve(args.arch, config.finetune_of(cfg, args.arch, "pruned"), method=args.method,
                              importance_name="bench", scope="all", quantize_cfg=cfg["quantize"],
                              coding_cfg=cfg["coding"], model_path=args.model, importance_path=args.importance,
                              source={"dataset": dataset, "prepared": args.data}, device="cpu")
    def grid(points: int) -> list[float]:
        return network_rate_grid(curve.model, curve.importance, method=args.method, names=curve.names,
                                  masks=curve.masks, zero_center=curve.options.get("zero_center", True),
                                  bits_min=rates["bits_min"], bits_max=rates["bits_max"], points=points)

    with tempfile.TemporaryDirectory() as folder:
        def measure(value: float) -> search.Probe:
            row = sweeps.measure_point(curve, value, folder, seeds=[cfg["seed"]], keep_unfinetuned=False)[0]
            return search.Probe(value, [row["accuracy"]], row["ratio_file"])

        start = time.perf_counter()
        dense = [measure(v) for v in grid(args.grid)]
        grid_seconds = time.perf_counter() - start
        start = time.perf_counter()
        coarse = [measure(v) for v in grid(args.coarse)]
        found, made = search.search(measure, coarse, args.floor, max_probes=max_probes,
                                    integer=curve.rate_name == "k")
        search_seconds = time.perf_counter() - start
    best_grid = search.best(dense, args.floor)
    evaluated = [*coarse, *made]
    reached = None if found is None else 1 + next(i for i, p in enumerate(evaluated) if p is found)
    result = {
        "arch": args.arch, "method": args.method, "floor": args.floor, "model": args.model,
        "threads": args.threads, "seed": cfg["seed"], "machine": reference.machine_description(),
        "grid": {"evaluations": len(dense), "seconds": grid_seconds,
                 "best": None if best_grid is None else {"rate": best_grid.rate, "ratio": best_grid.ratio,
                                                          "accuracy": best_grid.accuracy}},
        "search": {"evaluations": len(evaluated), "refining": len(made), "max_probes": max_probes,
                   "reached_after": reached, "seconds": search_seconds,
                   "best": None if found is None else {"rate": found.rate, "ratio": found.ratio,
                                                       "accuracy": found.accuracy}},
    }
    for name in ("grid", "search"):
        r = result[name]
        best = r["best"]
        print(f"{name:>6}: {r['evaluations']:3d} fine-tuned evaluations, {r['seconds']:.0f} s; best at "
              f"{args.floor}%: " + ("none" if best is None else
                                    f"ratio {best['ratio']:.2f} ({best['accuracy']:.2f}%, rate {best['rate']:.6g})"))
    if reached is not None:
        print(f"search: operating point reached after {reached} of {len(evaluated)} evaluations")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
