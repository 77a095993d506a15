"""Results: accuracy with bootstrap CIs, run folders written atomically, a run log, text tables,
study plots and Markdown reports."""

from tttlab.results.plots import (
    Reference,
    check_rows,
    compact_number,
    mean_over_seeds,
    method_color,
    paper_references,
    plot_histogram,
    plot_study,
    study_row,
)
from tttlab.results.report import format_gain, markdown_table, write_report, write_rows_csv
from tttlab.results.stats import Estimate, accuracy_table, bootstrap_ci, paired_bootstrap_diff
from tttlab.results.store import (
    InterruptedAfterCommit,
    PointRecords,
    append_run_log,
    read_config,
    read_metrics,
    read_points,
    read_run_log,
    write_run,
)
from tttlab.results.table import format_accuracy, format_number, format_table

__all__ = [
    "Estimate",
    "InterruptedAfterCommit",
    "PointRecords",
    "Reference",
    "accuracy_table",
    "append_run_log",
    "bootstrap_ci",
    "check_rows",
    "compact_number",
    "format_accuracy",
    "format_gain",
    "format_number",
    "format_table",
    "markdown_table",
    "mean_over_seeds",
    "method_color",
    "paired_bootstrap_diff",
    "paper_references",
    "plot_histogram",
    "plot_study",
    "read_config",
    "read_metrics",
    "read_points",
    "read_run_log",
    "study_row",
    "write_report",
    "write_rows_csv",
    "write_run",
]
