"""Results: accuracy with bootstrap CIs, run folders written atomically, a run log, text tables."""

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
    "accuracy_table",
    "append_run_log",
    "bootstrap_ci",
    "format_accuracy",
    "format_number",
    "format_table",
    "paired_bootstrap_diff",
    "read_config",
    "read_metrics",
    "read_points",
    "read_run_log",
    "write_run",
]
