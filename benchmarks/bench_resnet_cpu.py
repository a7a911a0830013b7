"""ResNet-32 on the CPU: images/s of the previous code paths and of today's, in one run, and the ratios.

    python benchmarks/bench_resnet_cpu.py --threads 2 [--steps 20] [--json out.json]

Three workloads on CIFAR-10-shaped inputs (random images; the speed does not depend on the values):

- training step (batch 128, SGD with momentum, cross-entropy): before = NCHW float32 (the code of
  netquant <= 0.1); now = ``netquant.train`` with channels_last and ``precision: bf16`` autocast;
- evaluation pass over 10,000 images: before = ``torch.no_grad``, NCHW, batches of 1,000; now =
  ``netquant.train.evaluate`` (``inference_mode``, channels_last, batches of 128, float32 - exact);
- fine-tuning step of the shared values (batch 128, 32 clusters): before = NCHW float32; now =
  ``netquant.finetune.finetune_codebooks`` (channels_last, ``precision="bf16"``).

Both sides of a workload alternate, each repeated ``--repeat`` times, and the median is reported, so a
machine that is busy with something else slows both sides alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from netquant import data, finetune, models, quantize, train


def _images(n: int, seed: int = 0) -> data.ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return data.ImageTensors(images, torch.arange(n) % 10, *data.STATS["cifar10"])


def train_steps(model, batches, *, channels_last: bool, precision: str) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if channels_last:
        train.use_channels_last(model)
    model.train()
    for x, y in batches:
        x = train.to_device(x, "cpu", channels_last)
        with train.autocast("cpu", precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()


@torch.no_grad()
def evaluate_before(model, test: data.ImageTensors) -> None:
    model.eval()
    for x, y in data.batches(test, 1000):
        F.cross_entropy(model(x), y, reduction="sum").item()


def finetune_before(model, qmodel, batches) -> None:
    """The fine-tuning step of netquant <= 0.1: NCHW weights gathered from the codebook, float32."""
    network = finetune.CodebookNetwork(model, qmodel, torch.device("cpu"))
    network.channels_last = False
    model.to(memory_format=torch.contiguous_format)
    optimizer = torch.optim.SGD(network.centers, lr=0.001, momentum=0.9)
    for x, y in batches:
        loss = F.cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="training / fine-tuning steps per measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_data, test = _images(128 * args.steps), _images(10000, seed=1)
    batches = list(data.batches(train_data, 128))
    model = models.build("resnet32")
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        m = models.build("resnet32")
        m.load_state_dict(state)
        return m

    names = [n for n, p in model.named_parameters()]
    qmodel = quantize.quantize_model(state, param_names=names, masks={}, method="kmeans", k=32, scope="all",
                                     parameters=names)
    workloads = {
        "training step": (
            lambda: train_steps(fresh(), batches, channels_last=False, precision="fp32"),
            lambda: train_steps(fresh(), batches, channels_last=True, precision="bf16"),
            len(batches) * 128),
        "evaluation pass": (
            lambda: evaluate_before(fresh(), test),
            lambda: train.evaluate(fresh(), data.batches(test, 128)),
            len(test)),
        "fine-tuning step": (
            lambda: finetune_before(fresh(), qmodel, batches),
            lambda: finetune.finetune_codebooks(fresh(), qmodel, batches, steps=len(batches), lr=0.001,
                                                precision="bf16"),
            len(batches) * 128),
    }
    results = {"threads": args.threads, "torch": torch.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print(f"ResNet-32, {args.threads} thread(s), torch {torch.__version__}; images/s, median of {args.repeat}")
    print(f"{'workload':<18}{'before':>10}{'now':>10}{'ratio':>8}")
    for name, (before, now, images) in workloads.items():
        before(), now()  # warm-up: first-call allocations and oneDNN kernel choice
        t_before, t_now = [], []
        for _ in range(args.repeat):  # alternate, so background load hits both sides alike
            t_before.append(seconds(before))
            t_now.append(seconds(now))
        rate_before, rate_now = images / statistics.median(t_before), images / statistics.median(t_now)
        results[name] = {"before": rate_before, "now": rate_now, "ratio": rate_now / rate_before}
        print(f"{name:<18}{rate_before:>10.1f}{rate_now:>10.1f}{rate_now / rate_before:>7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
