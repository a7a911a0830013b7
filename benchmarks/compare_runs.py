"""Compare two runs of the workflow file by file: the proof that a change of the code changed no result.

    python benchmarks/compare_runs.py BEFORE/results AFTER/results [--rename runlength=mask-ans ...]

Every ``.nqz`` file of either run must exist in the other (after the renames, applied to paths, column
names and cells of BEFORE) with the same bytes; every CSV table the same cells, but for timing columns
(``*seconds*``, ``*time*``) and the columns only one run has, which are listed. Model checkpoints
(``*.pt``) are compared by their tensors. ``--except-description KEY``: a key that AFTER's files add to
their network description (a change made on purpose); the files must then be the same but for it: every
section but META byte-identical, and META's every other field. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from netquant import container


def renamed(text: str, renames: list[tuple[str, str]], identifier: bool = False) -> str:
    """``text`` with every OLD replaced by NEW (in a column name: with '-' written '_')."""
    for old, new in renames:
        text = text.replace(old, new.replace("-", "_") if identifier else new)
    return text


def timing(column: str) -> bool:
    return "seconds" in column or "time" in column


def compare_tables(a: Path, b: Path, renames) -> list[str]:
    left = pd.read_csv(a).rename(columns=lambda c: renamed(c, renames, identifier=True))
    left = left.map(lambda v: renamed(v, renames) if isinstance(v, str) else v)
    right = pd.read_csv(b)
    problems = []
    only = sorted(set(left.columns) ^ set(right.columns))
    if only:
        problems.append(f"{b}: columns in one run only: {only}")
    shared = [c for c in left.columns if c in right.columns and not timing(c)]
    if len(left) != len(right):
        return problems + [f"{b}: {len(left)} rows before, {len(right)} after"]
    for column in shared:
        x, y = left[column].reset_index(drop=True), right[column].reset_index(drop=True)
        same = (x == y) | (x.isna() & y.isna())
        if not same.all():
            row = int((~same).idxmax())
            problems.append(f"{b}: column {column!r} differs (row {row}: {x[row]!r} before, {y[row]!r} after)")
    return problems


def same_file(a: Path, b: Path, added_key: str | None) -> bool:
    x, y = a.read_bytes(), b.read_bytes()
    if x == y or added_key is None:
        return x == y
    p, q = container.parse(x), container.parse(y)
    if any(p.sections[tag] != q.sections[tag] for tag in container.SECTIONS if tag != "META"):
        return False
    q.network = {k: v for k, v in q.network.items() if k != added_key}
    fields = ("label_code", "index_code", "index_bound", "codebook_sizes", "entries", "label_bits", "label_crc",
              "index_symbols", "index_bits", "index_crc", "network")
    return all(getattr(p, f) == getattr(q, f) for f in fields)


def compare_checkpoints(a: Path, b: Path) -> list[str]:
    x, y = torch.load(a, map_location="cpu", weights_only=False), torch.load(b, map_location="cpu", weights_only=False)
    flat = lambda d: {k: v for k, v in d.items() if isinstance(v, torch.Tensor)} if isinstance(d, dict) else {}  # noqa: E731
    tx = {**flat(x), **flat(x.get("state_dict", {}) if isinstance(x, dict) else {})}
    ty = {**flat(y), **flat(y.get("state_dict", {}) if isinstance(y, dict) else {})}
    if tx.keys() != ty.keys() or any(not torch.equal(tx[k], ty[k]) for k in tx):
        return [f"{b}: tensors differ"]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    ap.add_argument("--except-description", metavar="KEY", help="a key AFTER's files add to their description")
    args = ap.parse_args()
    renames = [tuple(r.split("=", 1)) for r in args.rename]
    before = {Path(renamed(str(p.relative_to(args.before)), renames)): p for p in args.before.rglob("*") if p.is_file()}
    after = {p.relative_to(args.after): p for p in args.after.rglob("*") if p.is_file()}
    problems, counts = [], {"nqz": 0, "csv": 0, "pt": 0}
    for rel in sorted(set(before) | set(after)):
        if rel.suffix not in (".nqz", ".csv", ".pt"):
            continue
        if rel not in before or rel not in after:
            problems.append(f"{rel}: only {'after' if rel in after else 'before'}")
            continue
        counts[rel.suffix[1:]] += 1
        if rel.suffix == ".nqz" and not same_file(before[rel], after[rel], args.except_description):
            problems.append(f"{rel}: bytes differ")
        elif rel.suffix == ".csv":
            problems += compare_tables(before[rel], after[rel], renames)
        elif rel.suffix == ".pt":
            problems += compare_checkpoints(before[rel], after[rel])
    print(f"compared {counts['nqz']} .nqz files, {counts['csv']} tables, {counts['pt']} checkpoints")
    for problem in problems:
        print("DIFFERS:", problem)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
