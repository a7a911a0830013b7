"""Model files: ``{"arch", "state_dict", "masks", "meta"}`` saved with torch.save, written atomically.

``masks`` maps parameter names to boolean tensors (True = kept); an unpruned model has no masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from netquant.io import atomic_path


@dataclass
class Checkpoint:
    arch: str
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    payload = {
        "format": "netquant-checkpoint-1",
        "arch": ckpt.arch,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()},
        "masks": {k: v.detach().cpu().bool() for k, v in ckpt.masks.items()},
        "meta": ckpt.meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: not a readable netquant checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "netquant-checkpoint-1":
        raise ValueError(f"{path}: not a netquant checkpoint (expected a file written by netquant.checkpoint)")
    return Checkpoint(payload["arch"], payload["state_dict"], payload["masks"], payload["meta"])
