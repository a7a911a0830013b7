"""Re-encode the Table 1 files of a reference folder with other codes: the "<row>-context" rows.

    python benchmarks/recode_reference.py reference/cpu [--code plane-context] [--networks lenet5 ...]

For a reference folder collected before the workflow wrote a method's context-coded files (the sweep now
writes every pruned, fine-tuned point in the codes of ``netquant.sweeps.OTHER_CODES``), every Table 1 row
of a method (k-means, Hessian-weighted k-means, uniform, ECSQ and the DP rows) gets a ``<row>-context``
row: its file decoded and written again with ``--code`` labels and positions, checked to decode to the same
network, so the row's accuracy is the accuracy of the new file's network. Only the ratio and the path
change; the row keeps its operating point (a run of the workflow picks the ``-context`` rows' points by
their own ratio, which may choose a neighbouring point). Rewrites ``files/<net>/<row>-context-<floor>.nqz``
and ``tables/table1.{csv,md,tex}``; run ``python -m netquant readme README.md`` after it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from netquant import container, report

METHOD_ROWS = ("kmeans", "hwkmeans", "uniform", "ecsq", "dp-kmeans", "dp-ecsq")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--code", default="plane-context")
    ap.add_argument("--networks", nargs="+")
    args = ap.parse_args()
    table = pd.read_csv(args.folder / "tables" / "table1.csv")
    networks = args.networks or sorted(set(table["network"]))
    labels = {row.key: row.label for row in report.TABLE1_ROWS}
    added = []
    for row in table.itertuples(index=False):
        if row.network not in networks or row.row not in METHOD_ROWS or not isinstance(row.path, str):
            continue
        source = args.folder / row.path
        qmodel = container.read(source)
        name = f"{row.row}-context"
        target = source.with_name(source.name.replace(row.row, name, 1))
        decoded, metrics = container.write(target, qmodel, label_code=args.code, index_code=args.code)
        if any(not np.array_equal(decoded.values(n), qmodel.values(n)) for n in qmodel.tensors):
            raise RuntimeError(f"{target} does not decode to the network of {source}")
        new = row._asdict()
        new.update(row=name, label=labels[name], ratio=metrics["ratio_file"], path=str(target.relative_to(args.folder)),
                   note=f"{row.row}'s file re-encoded with {args.code} labels and positions",
                   paper_accuracy=np.nan, paper_ratio=np.nan, diff_accuracy=np.nan, diff_ratio=np.nan,
                   paper_source=np.nan)
        added.append(new)
        print(f"{row.network} {name} {row.floor_name}: {row.ratio:.2f}x -> {metrics['ratio_file']:.2f}x ({target})")
    keys = {(r["network"], r["row"], r["floor_name"]) for r in added}
    kept = table[[(n, r, f) not in keys for n, r, f in zip(table["network"], table["row"], table["floor_name"])]]
    merged = report.in_table1_order(pd.concat([kept, pd.DataFrame(added)], ignore_index=True))
    tables = args.folder / "tables"
    report.write_table_files(merged, tables / "table1.csv", tables / "table1.md", tables / "table1.tex",
                             columns=(*report.TABLE1_DISPLAY_COLUMNS, "path"))


if __name__ == "__main__":
    main()
