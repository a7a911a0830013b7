"""The README's generated blocks: each ``<!-- reference: KIND ARGS -->`` ... ``<!-- end reference -->`` block
is rendered again from a reference folder (``python -m netquant readme``, see ``reference.py`` for the folders), so no number in the README is
typed by hand. Kinds: ``table1 NET FOLDER``, ``rerun NET FOLDER OTHER``, ``coding NET FOLDER``,
``nncodec NET FOLDER``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from netquant import container


_BLOCK = re.compile(r"(<!-- reference: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end reference -->)", re.S)
_SHOWN = ("selected", "fallback", "model")


def _rows_shown(folder: Path, network: str) -> pd.DataFrame:
    table1 = pd.read_csv(folder / "tables" / "table1.csv")
    rows = table1[(table1["network"] == network) & table1["status"].isin(_SHOWN)]
    if rows.empty:
        raise ValueError(f"{folder / 'tables' / 'table1.csv'} has no {network} rows")
    return rows.fillna({"floor_name": "", "path": ""})


def _accuracy(row) -> str:
    text = f"{row.accuracy:.2f}%"
    if isinstance(row.seeds, (int, float)) and row.seeds > 1 and math.isfinite(row.accuracy_spread):
        text += f" ± {row.accuracy_spread:.2f}"
    return text + (" (below the floor)" if row.status == "fallback" else "")


def _paper(row) -> str:
    if not math.isfinite(row.paper_accuracy):
        return "-"
    ratio = f" / {row.paper_ratio:.2f}x" if math.isfinite(row.paper_ratio) else ""
    return f"{row.paper_accuracy:.2f}%{ratio}"


def table1_block(folder: Path, network: str) -> str:
    """A network's Table 1 rows as the README shows them: each row at each floor, our accuracy (the mean
    over the fine-tuning seeds ± half their range), the ratio of the row's file, the paper's numbers."""
    lines = ["| row | floor | ours: accuracy | ours: ratio | paper: accuracy / ratio | file |",
             "|---|---|---|---|---|---|"]
    for row in _rows_shown(folder, network).itertuples():
        ratio = f"{row.ratio:.2f}x" if math.isfinite(row.ratio) else "-"
        path = f"`{row.path}`" if row.path else "-"
        lines.append(f"| {row.label} | {row.floor_name or '-'} | {_accuracy(row)} | {ratio} | {_paper(row)} | {path} |")
    return "\n".join(lines) + "\n"


def rerun_block(folder: Path, other: Path, network: str) -> str:
    """How far each of a network's Table 1 rows moved between the runs kept in ``folder`` and ``other``."""
    key = ["row", "floor_name"]
    first, second = _rows_shown(folder, network), _rows_shown(other, network)
    first = first.assign(order=range(len(first)))
    second = second.assign(order=range(len(first), len(first) + len(second)))
    both = first.merge(second, on=key, suffixes=("_a", "_b"), how="outer")
    # an outer merge sorts its keys: keep Table 1's order (the first run's rows, then any the second adds)
    both = both.iloc[both["order_a"].fillna(both["order_b"]).argsort()]
    lines = [f"| row | floor | `{folder.name}`: accuracy / ratio | `{other.name}`: accuracy / ratio | "
             "moved: accuracy / ratio |", "|---|---|---|---|---|"]
    for _, r in both.iterrows():
        cells = []
        for side in ("a", "b"):
            acc, ratio = r[f"accuracy_{side}"], r[f"ratio_{side}"]
            cells.append(("-" if pd.isna(acc) else f"{acc:.2f}%") + ("" if pd.isna(ratio) else f" / {ratio:.2f}x"))
        moved_acc = r["accuracy_b"] - r["accuracy_a"]
        moved = "-" if pd.isna(moved_acc) else f"{moved_acc:+.2f} points"
        if not (pd.isna(r["ratio_a"]) or pd.isna(r["ratio_b"])):
            moved += f" / {100 * (r['ratio_b'] / r['ratio_a'] - 1):+.1f}%"
        label = r["label_a"] if isinstance(r["label_a"], str) else r["label_b"]
        lines.append(f"| {label} | {r['floor_name'] or '-'} | {cells[0]} | {cells[1]} | {moved} |")
    return "\n".join(lines) + "\n"


def coding_block(folder: Path, network: str) -> str:
    """What the files of a network's quantized Table 1 rows spend per kept weight: labels and positions as
    coded in the file beside their empirical entropies (labels: of the whole file's label histogram;
    positions: of each tensor's kept/pruned mask), read from the files themselves."""
    lines = ["| row | floor | labels: code, bits / kept | label entropy | positions: code, bits / kept | "
             "position entropy | rest (bits / parameter) | ratio |", "|---|---|---|---|---|---|---|---|"]
    rows = _rows_shown(folder, network)
    for row in rows[(rows["status"] == "selected") & rows["method"].notna() & (rows["path"] != "")].itertuples():
        m = container.metrics(folder / row.path)
        labels, positions = m["bits_per_weight"]["in_file"], m["index_bits_per_kept"][m["index_code"]]
        rest = (m["file_bits"] - m["n_quantized"] * (labels + positions)) / m["n_params"]
        lines.append(f"| {row.label} | {row.floor_name} | {m['label_code']}, {labels:.3f} | "
                     f"{m['label_entropy_bits']:.3f} | {m['index_code']}, {positions:.3f} | "
                     f"{m['index_bits_per_kept']['entropy']:.3f} | {rest:.3f} | {m['ratio_file']:.2f}x |")
    return "\n".join(lines) + "\n"


def nncodec_block(folder: Path, network: str) -> str:
    """netquant against NNCodec (MPEG NNR) on the same pruned network, from
    ``benchmarks/nncodec_<network>.json`` (``benchmarks/bench_nncodec.py``): the whole pipelines at each
    accuracy floor, and NNCodec as a lossless coder of each Table 1 file's symbols."""
    result = json.loads((folder / "benchmarks" / f"nncodec_{network}.json").read_text())
    lines = ["| floor | NNCodec: best ratio (qp, accuracy) | netquant: best row meeting it (file accuracy) | "
             "netquant / NNCodec |", "|---|---|---|---|"]
    for c in result["pipeline"]["comparison"]:
        theirs, ours = c["nncodec"], c["ours_by_file_accuracy"]
        theirs_text = "none meets it" if theirs is None else (
            f"{theirs['ratio']:.2f}x (qp {theirs['qp']}, {theirs['accuracy']:.2f}%)")
        ours_text = "none" if ours is None else (
            f"{ours['ratio']:.2f}x, {ours['row']} ({ours['floor_name']} floor, {ours['file_accuracy']:.2f}%)")
        share = "-" if theirs is None or ours is None else f"{ours['ratio'] / theirs['ratio']:.3f}"
        lines.append(f"| {c['floor']:.2f}% | {theirs_text} | {ours_text} | {share} |")
    lines += ["", "| Table 1 file | netquant: codebook + label + position bits, its codes | the same, plane-context "
              "codes, format version 4 | NNCodec, same symbols | best netquant / NNCodec |", "|---|---|---|---|---|"]
    for f in result["lossless"]["files"]:
        best = f.get("best_bits")  # results of an earlier benchmark have no plane-context size
        share = min(f["ours_bits"], best or f["ours_bits"]) / f["nncodec_bits"]
        lines.append(f"| `{f['file']}` ({f['label_code']}, {f['index_code']}) | {f['ours_bits']:,} | "
                     f"{'-' if best is None else f'{best:,}'} | {f['nncodec_bits']:,} | {share:.3f} |")
    return "\n".join(lines) + "\n"


def _render(spec: str, root: Path) -> str:
    words = spec.split()
    if len(words) == 3 and words[0] == "table1":
        return table1_block(root / words[2], words[1])
    if len(words) == 3 and words[0] == "coding":
        return coding_block(root / words[2], words[1])
    if len(words) == 3 and words[0] == "nncodec":
        return nncodec_block(root / words[2], words[1])
    if len(words) == 4 and words[0] == "rerun":
        return rerun_block(root / words[2], root / words[3], words[1])
    raise ValueError(f"README block '<!-- reference: {spec} -->': expected 'table1 NETWORK FOLDER', "
                     "'coding NETWORK FOLDER', 'nncodec NETWORK FOLDER' or 'rerun NETWORK FOLDER OTHER_FOLDER'")


def refreshed_readme(readme: str | os.PathLike) -> str:
    """The text of ``readme`` with every reference block generated again from its folders."""
    readme = Path(readme)
    return _BLOCK.sub(lambda m: m.group(1) + _render(m.group("spec"), readme.parent) + m.group(4),
                      readme.read_text())
