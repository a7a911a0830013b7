"""Where a pruned model's accuracy goes when it is quantized finely: the model as it is, then uniform
quantization at tiny and at 3-5-bit steps, all layers together or one codebook per layer, BatchNorm folded
or not, unquantized parameters in float32 or float16; no fine-tuning; each a real file, decoded and
evaluated on the whole test set.

    python benchmarks/bench_high_rate_loss.py --arch resnet32 --model results/resnet32/pruned/model.pt \
        --importance results/resnet32/pruned/importance/hessian-50000.pt --data resources/data/cifar10.pt \
        --json out.json

It separates what the file format costs (folding, half precision: the tiny-step rows) from what one shared
step over layers of different scales costs (all layers together vs one codebook per layer at the same step).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
from pathlib import Path

import torch

from netquant import compress, steps
from netquant.measure import write_files
from netquant.quantize.network import network_rate_grid, quantize_network, quantized_and_masks

import provenance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--model", required=True, help="a pruned checkpoint (results/<net>/pruned/model.pt)")
    ap.add_argument("--importance", required=True, help="its Hessian (results/<net>/pruned/importance/*.pt)")
    ap.add_argument("--data", required=True, help="the prepared dataset (resources/data/<dataset>.pt)")
    ap.add_argument("--include", default="weights+biases")
    ap.add_argument("--bits", type=float, nargs="+", default=[3.0, 4.0, 5.0])
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    commit = provenance.commit()
    source = compress.test_source({"dataset": "cifar10" if args.arch == "resnet32" else "mnist"}, prepared=args.data)
    model, _ = steps.load_network(args.arch, args.model, source)
    hessian = torch.load(args.importance)
    rows = [{"case": "the pruned model as it is", "accuracy": steps.test_metrics(model, source, "cpu")["accuracy"]}]
    print(rows[-1], flush=True)
    names, masks = quantized_and_masks(model, args.include, "zeros", None)
    cases = [(1e-5, "all", True, "float32"), (1e-5, "all", True, "float16")]
    for fold in (True, False):
        steps_for_bits = network_rate_grid(model, hessian, method="uniform", names=names, masks=masks,
                                           bits_min=min(args.bits), bits_max=max(args.bits), points=len(args.bits),
                                           fold_batchnorm=fold)
        cases += [(step, scope, fold, "float16") for step in steps_for_bits for scope in ("all", "layer")]
    with tempfile.TemporaryDirectory() as folder:
        for step, scope, fold, unquantized in cases:
            qmodel = quantize_network(model, hessian, method="uniform", rate={"step": float(step)}, scope=scope,
                                      include=args.include, fold_batchnorm=fold)
            decoded, metrics, _ = write_files(f"{folder}/file", qmodel, {
                "label_code": "huffman", "index_code": "deep-compression", "unquantized": unquantized})
            network = copy.deepcopy(model)
            network.load_state_dict(decoded.state_dict())
            rows.append({"case": "uniform", "step": float(step), "scope": scope, "fold_batchnorm": fold,
                         "unquantized": unquantized, "accuracy": steps.test_metrics(network, source, "cpu")["accuracy"],
                         "ratio": metrics["ratio_file"]})
            print(rows[-1], flush=True)
    Path(args.json).write_text(json.dumps({
        "model": args.model, "importance": args.importance, "include": args.include, "finetuning": "none",
        "commit": commit, "machine": platform.platform(), "torch": torch.__version__, "threads": 1,
        "command": provenance.command_line("bench_high_rate_loss.py", args),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
