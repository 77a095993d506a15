"""A study's Markdown report and its rows as CSV, each written atomically.

    write_rows_csv(folder / "rows.csv", rows)
    plot_study(rows, "width", ["global", "ttt"], folder / "model-size.png", x_label="d")
    write_report(folder / "README.md", title="Model size", summary="...", table_rows=rows,
                 columns=["width", "seed", "acc_global", "acc_ttt", "gain"],
                 plot=folder / "model-size.png", settings=config, references=refs)

Rows follow the study row schema of `tttlab.results.plots`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tttlab.atomic import atomic_write_text, dumps_json
from tttlab.results.plots import Reference
from tttlab.results.stats import Estimate
from tttlab.results.table import csv_cell, csv_text, format_accuracy, format_number, is_number


def write_rows_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Every row as one CSV line, atomically; columns in first-seen order across the rows, missing
    cells empty, floats with every digit (as the run log writes them)."""
    if not rows:
        raise ValueError("rows is empty: pass one dict per unit")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} is a {type(row).__name__}, not a dict: pass dicts")
    columns = list(dict.fromkeys(str(k) for row in rows for k in row))
    lines = [columns] + [[csv_cell(row.get(c)) for c in columns] for row in rows]
    path = Path(path)
    atomic_write_text(path, csv_text(lines))
    return path


def format_gain(mean: float, low: float, high: float) -> str:
    """A paired difference of fractions as signed accuracy points, e.g. '+1.06 [+0.81, +1.31]'."""
    return f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a Markdown table. `acc_<m>` cells show their CI ('81.95% [81.19, 82.67]') and,
    where every row has `se_<m>`, the binomial standard error ('81.95% ± 0.38 [81.19, 82.67]');
    `gain` cells their CI in points; other cells as `format_table` prints them; numbers align
    right."""
    if not rows:
        raise ValueError("table_rows is empty: pass at least one row")
    if not columns:
        raise ValueError("columns is empty: name the row keys to show, e.g. ['width', 'acc_ttt']")
    known = list(dict.fromkeys(k for row in rows for k in row))
    for c in columns:
        if c not in known:
            close = difflib.get_close_matches(c, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"column {c!r} is in no row{hint}; the rows have {', '.join(known)}")
    header, right, body = [], [], [[] for _ in rows]
    for c in columns:
        spec = _interval_columns(c)
        with_ci = spec is not None and all(k in row for row in rows for k in spec[1:])
        se = f"se_{c.removeprefix('acc_')}" if c.startswith("acc_") else None
        with_se = with_ci and se is not None and all(row.get(se) is not None for row in rows)
        header.append(_header(c, with_se) if with_ci else c)
        right.append(with_ci or all(is_number(r[c]) for r in rows if r.get(c) is not None))
        for cells, row in zip(body, rows, strict=True):
            text = _cell_text(row, c, spec if with_ci else None)
            if with_se and row.get(c) is not None:
                percent, interval = text.split(" ", 1)
                text = f"{percent} ± {100 * row[se]:.2f} {interval}"
            cells.append(text)
    lines = [_md_line(header), "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    return "\n".join(lines + [_md_line(cells) for cells in body])


def _interval_columns(column: str) -> tuple[str, str, str] | None:
    """(mean, low, high) keys when `column` is an accuracy or the gain, else None."""
    if column == "gain":
        return ("gain", "gain_low", "gain_high")
    if column.startswith("acc_"):
        m = column.removeprefix("acc_")
        return (column, f"ci_low_{m}", f"ci_high_{m}")
    return None


def _header(column: str, with_se: bool = False) -> str:
    if column == "gain":
        return "gain, points [CI]"
    return f"{column.removeprefix('acc_')} accuracy{' ± s.e.' if with_se else ''} [CI]"


def _cell_text(row: dict[str, Any], column: str, spec: tuple[str, str, str] | None) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if spec is not None:
        mean, low, high = (row[k] for k in spec)
        return (
            format_gain(mean, low, high)
            if column == "gain"
            else format_accuracy(Estimate(mean, low, high))
        )
    if isinstance(value, Estimate):
        return format_accuracy(value)
    return format_number(value)


def _md_line(cells: Sequence[str]) -> str:
    """One table line; a '|' or line break inside a cell would break the table."""
    safe = [" ".join(c.replace("|", "\\|").split()) for c in cells]
    return "| " + " | ".join(safe) + " |"


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: str,
    table_rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    plot: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    references: Sequence[Reference] | None = None,
    sections: dict[str, str] | None = None,
) -> Path:
    """Write a Markdown report: title, summary, results table, the plot (linked relative to the
    report), further titled `sections` (Markdown), settings as JSON and the paper's reference
    values with their source. Atomic."""
    path = Path(path)
    if not title.strip() or "\n" in title:
        raise ValueError(f"title {title!r} must be one non-empty line, e.g. 'Model size'")
    if not summary.strip():
        raise ValueError("summary is empty: say in a sentence or two what the study found")
    parts = [f"# {title}", summary.strip(), "## Results", markdown_table(table_rows, columns)]
    if plot is not None:
        plot = Path(plot)
        if not plot.is_file():
            raise FileNotFoundError(f"no plot at {plot}: write it first (plot_study), then report")
        link = Path(os.path.relpath(plot.resolve(), path.resolve().parent)).as_posix()
        parts.append(f"![{title}]({link})")
    for heading, text in (sections or {}).items():
        parts += [f"## {heading}", text.strip()]
    if settings is not None:
        parts += ["## Settings", f"```json\n{dumps_json(settings).rstrip()}\n```"]
    if references:
        parts += ["## The paper's reference values", _references_text(references)]
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def _references_text(references: Sequence[Reference]) -> str:
    """The references as a table, then each distinct source once."""
    rows = []
    for ref in references:
        pm = "" if ref.pm is None else f" ± {100 * ref.pm:.2f}"
        rows.append({"reference": ref.label, "accuracy": f"{100 * ref.accuracy:.2f}%{pm}"})
    sources = list(dict.fromkeys(ref.source for ref in references))
    table = markdown_table(rows, ["reference", "accuracy"])
    return "\n\n".join([table] + [f"Source: {s}" for s in sources])
