"""A run folder's plot and report: each method's accuracy with its CI, and TTT's gain per class.

    write_run_plot(metrics, points, folder / "plot.png")
    write_run_report(folder / "report.md", metrics, points, folder / "plot.png", settings)

`tttlab ttt` writes both into every run folder, so a run is looked at, not only read as numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tttlab.results.plots import figure, method_color, save_figure
from tttlab.results.report import markdown_table, write_report
from tttlab.results.stats import Estimate
from tttlab.results.store import PointRecords

BASELINE = "global"


def class_gains(
    points: PointRecords, classes: list[str], method: str = "ttt", baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """Per class of the test set: its points, both methods' accuracy and `method`'s gain over
    `baseline` in accuracy (fractions)."""
    rows = []
    for c in np.unique(points.label):
        mine = points.label == c
        acc = {m: float((points.pred[m][mine] == c).mean()) for m in (baseline, method)}
        name = classes[c] if 0 <= c < len(classes) else str(c)
        rows.append(
            {
                "class": name,
                "points": int(mine.sum()),
                f"acc_{baseline}": acc[baseline],
                f"acc_{method}": acc[method],
                "gain": acc[method] - acc[baseline],
            }
        )
    return rows


def write_run_plot(metrics: dict[str, Any], points: PointRecords, path: str | Path) -> Path:
    """Each method's accuracy with its 95% CI (left) and, where the run has TTT and the global
    head, TTT's gain per class in points (right)."""
    methods = metrics["methods"]
    gains = "ttt" in methods and BASELINE in methods
    fig = figure((10, 3.8) if gains else (5, 3.8))
    axes = fig.subplots(1, 2 if gains else 1, squeeze=False)[0]
    ax = axes[0]
    names = list(methods)
    acc = [100 * methods[m]["accuracy"] for m in names]
    err = [
        [a - 100 * methods[m]["ci_low"] for a, m in zip(acc, names, strict=True)],
        [100 * methods[m]["ci_high"] - a for a, m in zip(acc, names, strict=True)],
    ]
    for i, m in enumerate(names):  # points, not bars: the axis need not start at 0
        ax.errorbar(i, acc[i], yerr=[[err[0][i]], [err[1][i]]], fmt="o", capsize=5, ms=7,
                    color=method_color(m))  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("test accuracy (%), 95% CI")
    ax.set_title(f"{metrics.get('n_test', len(points.label)):,} test points", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if gains:
        rows = class_gains(points, metrics.get("classes", []))
        ax = axes[1]
        values = [100 * r["gain"] for r in rows]
        colors = [method_color("ttt") if v >= 0 else method_color(BASELINE) for v in values]
        ax.barh([r["class"] for r in rows], values, color=colors)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("TTT - global, accuracy points")
        ax.set_title("TTT's gain per class", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path)


def write_run_report(
    path: str | Path,
    metrics: dict[str, Any],
    points: PointRecords,
    plot: str | Path | None,
    settings: dict[str, Any],
) -> Path:
    """report.md: the run's table (accuracy with CI, seconds per point), each method's gain over
    the global head, TTT's gain per class, the plot and the settings."""
    methods = metrics["methods"]
    rows = [
        {
            "method": m,
            "accuracy": Estimate(a["accuracy"], a["ci_low"], a["ci_high"]),
            "ms per point": 1000 * a["seconds_per_point"],
        }
        for m, a in methods.items()
    ]
    gains = metrics.get("gain_over_global", {})
    lines = [
        f"{m} - {BASELINE}: {100 * g['mean']:+.2f} points, 95% CI [{100 * g['low']:+.2f}, "
        f"{100 * g['high']:+.2f}] (paired bootstrap)"
        for m, g in gains.items()
    ]
    summary = (
        f"{metrics.get('n_test', len(points.label)):,} test points, "
        f"{metrics.get('n_train', '?'):,} training points, features of width "
        f"{metrics.get('feature_width', '?')}.\n\n" + "\n".join(f"- {line}" for line in lines)
    )
    sections = {}
    if "ttt" in methods and BASELINE in methods:
        per_class = [
            {
                "class": r["class"],
                "points": r["points"],
                BASELINE: f"{100 * r[f'acc_{BASELINE}']:.2f}%",
                "ttt": f"{100 * r['acc_ttt']:.2f}%",
                "gain, points": f"{100 * r['gain']:+.2f}",
            }
            for r in class_gains(points, metrics.get("classes", []))
        ]
        columns = ["class", "points", BASELINE, "ttt", "gain, points"]
        sections["TTT's gain per class"] = markdown_table(per_class, columns)
    return write_report(
        path,
        title="tttlab run",
        summary=summary,
        table_rows=rows,
        columns=["method", "accuracy", "ms per point"],
        plot=plot,
        settings=settings,
        sections=sections,
    )
