"""Tables as files: CSV (full precision), GitHub Markdown and booktabs LaTeX (rounded for reading)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from netquant.io import write_text
from netquant.report.labels import network_label

COLUMN_HEADERS = {
    "network": "Network", "label": "Method", "row": "Row", "status": "Status", "note": "Note",
    "method": "Method", "importance": "Importance", "rate_name": "Rate", "rate_value": "Value",
    "clusters": "Clusters", "bits_huffman": "Bits (Huffman)", "accuracy": "Accuracy (%)", "top5": "Top-5 (%)",
    "ratio": "Ratio", "floor": "Floor (%)", "paper_accuracy": "Paper acc. (%)", "paper_ratio": "Paper ratio",
    "diff_accuracy": "Diff. acc.", "diff_ratio": "Diff. ratio", "variant": "Variant", "scope": "Scope",
    "finetuned": "Fine-tuned", "heuristic": "Heuristic", "optimum": "DP solver",
    "bits_huffman_heuristic": "Bits heur.", "bits_huffman_optimum": "Bits DP",
    "accuracy_heuristic": "Acc. heur. (%)", "accuracy_optimum": "Acc. DP (%)",
    "accuracy_gap": "Acc. gap", "bits_gap": "Bits gap", "floor_name": "Accuracy floor",
    "accuracy_spread": "+/- (seeds)", "seeds": "Seeds",
}
# Columns shown with two decimals (percentages, ratios, bits); other floats with four significant digits.
_TWO_DECIMALS = ("accuracy", "accuracy_spread", "top5", "ratio", "diff", "paper_accuracy", "paper_ratio", "bits", "entropy", "floor")


def format_value(column: str, value) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if column.startswith("diff") or column.endswith("_gap"):
            return f"{value:+.2f}"
        if column.startswith(_TWO_DECIMALS):
            return f"{value:.2f}"
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _display(df: pd.DataFrame, columns: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
    columns = list(df.columns if columns is None else columns)
    headers = [COLUMN_HEADERS.get(c, c) for c in columns]
    if "network" in columns:
        df = df.assign(network=df["network"].map(network_label))
    cells = [[format_value(c, value) for c, value in zip(columns, values)]
             for values in df[columns].itertuples(index=False)]
    return headers, cells


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown pipe table of ``df`` (numbers right-aligned; empty cell = missing)."""
    headers, cells = _display(df, columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in (df.columns if columns is None else columns)]
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A booktabs ``tabular`` of ``df`` (needs ``\\usepackage{booktabs}``); missing cells as ``--``."""
    headers, cells = _display(df, columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in (df.columns if columns is None else columns)]
    lines = [r"\begin{tabular}{" + "".join("r" if num else "l" for num in numeric) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) if c else "--" for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | os.PathLike, *, columns: Sequence[str] | None = None) -> list[Path]:
    """Write ``stem.csv`` (all columns, full precision), ``stem.md`` and ``stem.tex`` (``columns`` only,
    default all; rounded for reading). Each file is written atomically. Returns the three paths."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    write_table_files(df, *paths, columns=columns)
    return paths


def write_table_files(df: pd.DataFrame, csv_path, markdown_path, latex_path, *,
                      columns: Sequence[str] | None = None) -> None:
    """:func:`write_table` with each file's path given."""
    write_text(csv_path, df.to_csv(index=False))
    write_text(markdown_path, markdown_table(df, columns))
    write_text(latex_path, latex_table(df, columns))

