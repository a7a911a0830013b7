"""The paper's published numbers (package data ``paper_numbers.yaml``, the only place they are kept) and
where each number of it is looked up."""

from __future__ import annotations

import math
from importlib import resources
from typing import Mapping

import yaml


def load_paper_numbers() -> dict:
    """The paper's published Table 1 (package data ``paper_numbers.yaml``): ``{"source", "reference",
    "networks": {network: {"table1": {row: {"accuracy", "ratio"?, "source"}}}}}``."""
    text = resources.files("netquant").joinpath("paper_numbers.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def paper_cell(paper: Mapping, network: str, row: str) -> dict:
    """The paper's Table 1 cell ``{"accuracy", "ratio", "source"}`` (NaN where the paper has none)."""
    cell = paper["networks"].get(network, {}).get("table1", {}).get(row, {})
    return {"accuracy": float(cell.get("accuracy", math.nan)), "ratio": float(cell.get("ratio", math.nan)),
            "source": cell.get("source", "")}
