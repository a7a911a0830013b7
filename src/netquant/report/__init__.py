"""Figures and tables of the paper from the tidy sweep results.

Inputs
------
``points``  one row per sweep point and fine-tuning state (``results/tables/points.csv``), columns
            network, variant (baseline|pruned), scope (all|layer), method, importance, rate_name,
            rate_value, finetuned, clusters, entropy_bits, bits_fixed, bits_huffman, bits_ans (average
            codeword length per quantized weight, bits), accuracy, top5 (test %), ratio_file,
            ratio_eq1, ratio_file_ans, ratio_file_mask_ans, ratio_file_context, file_bytes, path (and,
            for the pruned, fine-tuned points, path_ans, path_mask_ans and path_context: the same network
            with ANS-coded labels, with mask-ANS positions, and with the plane-context codes of labels and
            positions, each a real file; ``netquant.sweeps.OTHER_CODES``).
``models``  the models before quantization (``results/tables/models.csv``): network, variant,
            accuracy, top5, parameters, nonzeros, ratio_file (pruned: 32-bit values + coded indices).
``skipped`` {network: reason} for networks that were not run (e.g. AlexNet without ImageNet).

One module per job: ``figures`` (Figures 1-3, layer-wise), ``selection`` (which point each Table 1 row
shows; heuristics vs DP), ``findings`` (the paper's findings checked on the curves), ``writers`` (CSV / Markdown / LaTeX), ``paper`` (the paper's numbers, kept only in
``paper_numbers.yaml``) and ``paper_vs_ours`` (the comparison page), ``outputs`` (the table rules' files),
``labels`` (display names).
"""

from netquant.report.figures import (
    METHOD_STYLES,
    AccuracyScale,
    parse_curve,
    plot_figure1,
    plot_figure2,
    plot_figure3,
    plot_layerwise,
    save_figure,
)
from netquant.report.findings import findings_markdown, findings_table
from netquant.report.labels import NETWORK_ORDER, importance_label, network_label, ordered_networks
from netquant.report.outputs import models_table, read_points, swept_points, write_points, write_table1
from netquant.report.paper import load_paper_numbers, paper_cell
from netquant.report.paper_vs_ours import paper_vs_ours_markdown
from netquant.report.selection import (
    DP_GAP_DISPLAY_COLUMNS,
    TABLE1_COLUMNS,
    TABLE1_DISPLAY_COLUMNS,
    TABLE1_ROWS,
    Table1Row,
    dp_gap_table,
    in_table1_order,
    model_row,
    row_importance,
    select_point,
    select_table1,
)
from netquant.report.writers import latex_table, markdown_table, write_table, write_table_files

__all__ = [
    "AccuracyScale", "DP_GAP_DISPLAY_COLUMNS", "METHOD_STYLES", "NETWORK_ORDER", "TABLE1_COLUMNS",
    "TABLE1_DISPLAY_COLUMNS", "TABLE1_ROWS", "Table1Row", "dp_gap_table", "findings_markdown", "findings_table",
    "importance_label", "in_table1_order", "latex_table", "load_paper_numbers", "markdown_table", "model_row", "models_table",
    "network_label", "ordered_networks", "paper_cell", "paper_vs_ours_markdown", "parse_curve", "plot_figure1",
    "plot_figure2", "plot_figure3", "plot_layerwise", "read_points", "row_importance", "save_figure",
    "select_point", "select_table1", "swept_points", "write_points", "write_table", "write_table1",
    "write_table_files",
]
