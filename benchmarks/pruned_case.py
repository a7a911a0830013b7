"""What the benchmarks on a pruned checkpoint share: the config's settings for the pruned model's points,
the prepared data, the network with its masks, and its Hessian."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from netquant import config, steps

REPO = Path(__file__).resolve().parents[1]


@dataclass
class PrunedCase:
    cfg: dict  # config/config.yaml
    finetune: dict  # the pruned model's fine-tuning settings, batch size apart
    batch_size: int
    include: str  # which parameters are quantized
    source: Any  # the data
    model: torch.nn.Module
    masks: dict[str, torch.Tensor]
    hessian: dict[str, torch.Tensor]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options :func:`load` reads."""
    ap.add_argument("--arch", default="resnet32")
    ap.add_argument("--model", required=True, help="a pruned checkpoint (results/<arch>/pruned/model.pt)")
    ap.add_argument("--importance", required=True, help="its Hessian (results/<arch>/pruned/importance/*.pt)")
    ap.add_argument("--data", required=True, help="the prepared data (resources/data/<dataset>.pt)")
    ap.add_argument("--dataset", default="cifar10")


def load(args: argparse.Namespace) -> PrunedCase:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    finetune = config.finetune_of(cfg, args.arch, "pruned")
    batch_size = finetune.pop("batch_size")
    source = steps.source_for({"dataset": args.dataset, "prepared": args.data})
    network, ckpt = steps.load_network(args.arch, args.model, source)
    return PrunedCase(cfg, finetune, batch_size,
                      cfg[args.arch].get("quantize_params") or cfg["quantize"]["params"], source, network,
                      ckpt.masks, torch.load(args.importance))
