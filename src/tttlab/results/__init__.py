"""Results: accuracy with bootstrap CIs, run folders written atomically, a run log, text tables,
study plots and Markdown reports."""

from tttlab._lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "tttlab.results.plots": [
            "Reference",
            "check_rows",
            "compact_number",
            "figure",
            "mean_over_seeds",
            "method_color",
            "paper_references",
            "plot_histogram",
            "plot_study",
            "save_figure",
            "study_row",
        ],
        "tttlab.results.report": [
            "format_gain",
            "markdown_table",
            "write_report",
            "write_rows_csv",
        ],
        "tttlab.results.run_report": [
            "class_gains",
            "write_run_plot",
            "write_run_report",
        ],
        "tttlab.results.stats": [
            "Estimate",
            "accuracy_table",
            "binomial_se",
            "bootstrap_ci",
            "paired_bootstrap_diff",
        ],
        "tttlab.results.store": [
            "InterruptedAfterCommit",
            "PointRecords",
            "append_run_log",
            "read_config",
            "read_metrics",
            "read_points",
            "read_run_log",
            "write_folder",
            "write_run",
        ],
        "tttlab.results.table": [
            "csv_cell",
            "csv_text",
            "format_accuracy",
            "format_number",
            "format_table",
            "is_number",
            "run_log_rows",
        ],
    },
)
