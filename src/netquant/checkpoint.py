"""Model files: ``{"arch", "state_dict", "masks", "meta"}`` saved with torch.save, written atomically.

``masks`` maps parameter names to boolean tensors (True = kept); an unpruned model has no masks. A pruned
network stored as a ``.nqz`` file with its 32-bit values (``label_code="raw"``, made by
``netquant.qmodel.from_pruned``: a fifth of the checkpoint's size) is read as a checkpoint too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from netquant import container
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
    with open(path, "rb") as f:
        if f.read(len(container.MAGIC)) == container.MAGIC:
            return _from_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: not a readable netquant checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "netquant-checkpoint-1":
        raise ValueError(f"{path}: not a netquant checkpoint (expected a file written by netquant.checkpoint)")
    return Checkpoint(payload["arch"], payload["state_dict"], payload["masks"], payload["meta"])


def _from_file(path: str | os.PathLike) -> Checkpoint:
    """A pruned network's ``.nqz`` file as a checkpoint: its decoded values, its kept positions as masks."""
    qmodel = container.read(path)
    if "arch" not in qmodel.network:
        raise ValueError(f"{path}: the file does not say which network it holds; it cannot start a run")
    masks = {name: torch.from_numpy(t.mask.reshape(t.shape).copy()) for name, t in qmodel.tensors.items()}
    return Checkpoint(str(qmodel.network["arch"]), qmodel.state_dict(), masks, {"stage": "pruned", "file": str(path)})
