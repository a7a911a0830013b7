"""Does retraining every weight with the quantizer in the loop lift a quantized pruned network to the pruned
model's accuracy, where fine-tuning the shared values alone does not (bench_finetune_ceiling.py)?

    python benchmarks/bench_quantized_retraining.py --model results/resnet32/pruned/model.pt \
        --importance results/resnet32/pruned/importance/hessian-50000.pt --data resources/data/cifar10.pt \
        --method uniform --rate 0.0352 --cases continue:3:0.002 qat:3:0.002 qat-kd:3:0.002 --json out.json

The pruned model is quantized as Table 1's row of ``--method`` is (all layers together, the pruning masks
kept, the config's options) at ``--rate`` (k, step or lam). Each case ``kind:epochs:lr`` then retrains every
weight of the pruned model, its masks kept, for that many epochs with the recipe of the pruning's retraining
(SGD, Nesterov momentum 0.9, weight decay 5e-4, crop-flip, bfloat16) and a cosine learning rate from ``lr``:

- ``qat``: each quantized weight is replaced in the forward pass by the nearest shared value of the
  quantized model's codebook (its gradient passes straight through to the weight), so the weights learn
  to sit where the fixed shared values are; BatchNorm runs in train mode and its statistics follow;
- ``qat-kd``: the same, the loss half cross-entropy, half the KL divergence from the pruned model's outputs
  at temperature 4 (scaled by 16);
- ``continue``: the same training without the quantizer: the pruned model's own neighbourhood.

The retrained network is then written with each weight's nearest shared value (the codebook unchanged) as
a ``.nqz`` file, decoded and evaluated (``projected``), and again after the config's fine-tuning of the
shared values (``finetuned``). ``continue`` also reports its full-precision accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from netquant import steps, train
from netquant.finetune import finetune_codebooks
from netquant.measure import write_files
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor
from netquant.quantize import rate_is_integer, rate_parameter
from netquant.quantize.network import quantize_network, values_to_quantize

import provenance
import pruned_case

KINDS = ("qat", "qat-kd", "continue")
TEMPERATURE = 4.0
CONTEXT = {"context": {"label_code": "plane-context", "index_code": "plane-context"}}


def parse_case(text: str) -> tuple[str, float, float]:
    kind, epochs, lr = text.split(":")
    if kind not in KINDS:
        raise ValueError(f"unknown case kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind, float(epochs), float(lr)


class Nearest:
    """Each quantized tensor's nearest shared value (its codebook sorted once), 0 at pruned positions."""

    def __init__(self, qmodel: QuantizedModel, masks: dict[str, torch.Tensor]) -> None:
        self.order, self.values, self.bounds = {}, {}, {}
        for name, tensor in qmodel.tensors.items():
            book = np.asarray(qmodel.codebooks[tensor.codebook], dtype=np.float32)
            order = np.argsort(book, kind="stable")
            values = torch.from_numpy(book[order])
            self.order[name], self.values[name], self.bounds[name] = order, values, (values[1:] + values[:-1]) / 2
        self.masks = {name: masks[name].bool() for name in qmodel.tensors if name in masks}

    def index(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.bounds[name], weight.detach().float().contiguous())

    def straight_through(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        nearest = self.values[name][self.index(name, weight)].to(weight.dtype)
        if name in self.masks:
            nearest = nearest * self.masks[name]
        return weight + (nearest - weight).detach()

    def labels(self, name: str, weight: torch.Tensor) -> np.ndarray:
        labels = self.order[name][self.index(name, weight).reshape(-1).numpy()].astype(np.int32)
        if name in self.masks:
            labels[~self.masks[name].reshape(-1).numpy()] = PRUNED
        return labels


def nearest_model(quantized: QuantizedModel, network: torch.nn.Module, nearest: Nearest) -> QuantizedModel:
    """``network`` as a quantized model of ``quantized``'s shared values: each quantized weight its nearest
    one, every other entry (BatchNorm folded) as it is."""
    state, _ = values_to_quantize(network, None)
    return QuantizedModel(
        codebooks=[np.asarray(book) for book in quantized.codebooks],
        tensors={name: QuantizedTensor(t.shape, t.codebook, nearest.labels(name, state[name]))
                 for name, t in quantized.tensors.items()},
        passthrough={name: state[name].numpy().copy() for name in quantized.passthrough},
        order=list(quantized.order), param_names=list(quantized.param_names), network=dict(quantized.network))


def retrain(model, nearest: Nearest | None, masks: dict[str, torch.Tensor], source, *, epochs: float, lr: float,
            distill: bool, seed: int):
    """``model`` retrained in place, its pruned weights kept at 0 (see the module docstring); returns the
    seconds it took."""
    teacher = copy.deepcopy(model).eval() if distill else None
    channels_last = train.use_channels_last(model)
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    total, step, epoch = int(epochs * source.samples_per_epoch / 128), 0, 0
    start = time.perf_counter()
    model.train()
    while step < total:
        for inputs, targets in source.train_epoch(128, steps.epoch_generator(seed, epoch), augment="crop-flip"):
            if step == total:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 + math.cos(math.pi * step / total)) / 2
            inputs = train.to_device(inputs, "cpu", channels_last)
            weights = {} if nearest is None else {name: nearest.straight_through(name, params[name])
                                                  for name in nearest.values}
            if channels_last:
                weights = {k: w.contiguous(memory_format=torch.channels_last) if w.dim() == 4 else w
                           for k, w in weights.items()}
            with train.autocast("cpu", "bf16"):
                outputs = torch.func.functional_call(model, weights, (inputs,))
                loss = F.cross_entropy(outputs, targets)
                if distill:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
                    kd = F.kl_div(F.log_softmax(outputs.float() / TEMPERATURE, 1),
                                  F.log_softmax(teacher_logits.float() / TEMPERATURE, 1), log_target=True,
                                  reduction="batchmean") * TEMPERATURE ** 2
                    loss = (loss + kd) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            train.masked_step(optimizer, params, masks)
            step += 1
        epoch += 1
    model.eval()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pruned_case.add_arguments(ap)
    ap.add_argument("--method", default="uniform")
    ap.add_argument("--rate", type=float, required=True, help="the method's rate parameter (k, step or lam)")
    ap.add_argument("--cases", nargs="+", default=["qat:3:0.002"],
                    help="kind:epochs:lr, kind one of " + ", ".join(KINDS))
    ap.add_argument("--seed", type=int, default=1, help="retraining and fine-tuning seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    try:
        cases = [parse_case(case) for case in args.cases]
    except (argparse.ArgumentTypeError, ValueError) as error:
        ap.error(f"--cases: {error} (each case is kind:epochs:lr)")
    torch.set_num_threads(args.threads)
    commit = provenance.commit()
    case = pruned_case.load(args)
    cfg, finetune, batch_size, source = case.cfg, case.finetune, case.batch_size, case.source
    pruned, hessian, include = case.model, case.hessian, case.include
    rate_name = rate_parameter(args.method)
    rate = {rate_name: int(args.rate) if rate_is_integer(args.method) else args.rate}
    quantized = quantize_network(pruned, hessian, method=args.method, rate=rate, include=include,
                                 masks=case.masks, options=cfg["quantize"]["options"])
    nearest = Nearest(quantized, case.masks)

    def measure(qmodel: QuantizedModel, stem: str) -> dict:
        decoded, metrics, others = write_files(stem, qmodel, cfg["coding"], CONTEXT)
        network = copy.deepcopy(pruned)
        network.load_state_dict(decoded.state_dict())
        return {"accuracy": steps.test_metrics(network, source, "cpu")["accuracy"], "ratio": metrics["ratio_file"],
                "ratio_context": others["context"][1]["ratio_file"]}

    rows = [{"case": "pruned model", "accuracy": steps.test_metrics(pruned, source, "cpu")["accuracy"]}]
    print(json.dumps(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        rows.append({"case": "quantized", **measure(quantized, f"{folder}/quantized")})
        print(json.dumps(rows[-1]), flush=True)
        for kind, epochs, lr in cases:
            network = copy.deepcopy(pruned)
            seconds = retrain(network, None if kind == "continue" else nearest, nearest.masks, source,
                              epochs=epochs, lr=lr, distill=kind == "qat-kd", seed=args.seed)
            row = {"case": f"{kind}:{epochs:g}:{lr:g}", "retrain_seconds": round(seconds, 1)}
            if kind == "continue":
                row["full_precision_accuracy"] = steps.test_metrics(network, source, "cpu")["accuracy"]
            projected = nearest_model(quantized, network, nearest)
            row["projected"] = measure(projected, f"{folder}/projected")
            generator = torch.Generator().manual_seed(args.seed)
            tuned, _ = finetune_codebooks(copy.deepcopy(pruned), projected,
                                          lambda: source.train_epoch(batch_size, generator), **finetune)
            row["finetuned"] = measure(tuned, f"{folder}/finetuned")
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "model": args.model, "importance": args.importance, "method": args.method, "rate": rate,
        "finetune": {**finetune, "batch_size": batch_size}, "include": include, "coding": cfg["coding"],
        "commit": commit, "machine": platform.platform(), "torch": torch.__version__, "threads": args.threads,
        "command": provenance.command_line("bench_quantized_retraining.py", args),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
