"""Table cells as text: aligned tables for the terminal (`tttlab runs`), and CSV cells and text
that keep every digit (run log, rows files); Markdown tables build on these (`results.report`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

import numpy as np

from tttlab.results.stats import Estimate


def format_accuracy(est: Estimate) -> str:
    """A fraction with its CI as percentages, e.g. '81.23% [80.45, 82.01]'."""
    return f"{100 * est.mean:.2f}% [{100 * est.low:.2f}, {100 * est.high:.2f}]"


def format_number(value: Any) -> str:
    """A cell as text: floats to 4 significant digits (whole above 10^4), None as empty."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float):
        # .4g would print 12345.6 as '1.235e+04'; a whole number reads better.
        return f"{value:.0f}" if math.isfinite(value) and abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_table(
    rows: list[dict], columns: list[str] | None = None, right: Sequence[str] = ()
) -> str:
    """Rows as an aligned text table: a header, a rule, then one line per row.

    `columns` picks and orders the columns (default: every key, in first-seen order). Number
    columns and those named in `right` align right, others left; missing cells are blank.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        return ""
    cells = [[format_number(row.get(c)) for c in columns] for row in rows]
    numeric = [
        c in right or all(is_number(row[c]) for row in rows if row.get(c) is not None)
        for c in columns
    ]
    widths = [max([len(c)] + [len(line[j]) for line in cells]) for j, c in enumerate(columns)]

    def line(texts: list[str]) -> str:
        parts = [
            t.rjust(w) if num else t.ljust(w)
            for t, w, num in zip(texts, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(columns)), rule] + [line(c) for c in cells])


def run_log_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Run-log rows as `tttlab runs` shows them: each method's accuracy in percent (`acc_ttt`
    -> `ttt` 81.95%) and its gain over the global head in points (`gain_ttt` -> `ttt gain`
    +7.82), as `tttlab ttt` prints them; (rows, the columns that align right)."""
    shown, right = [], []
    for row in rows:
        out = {}
        for key, value in row.items():
            if key.startswith(("acc_", "gain_")) and is_number(value):
                gain = key.startswith("gain_")
                key = f"{key[5:]} gain" if gain else key[4:]
                value = f"{100 * value:+.2f}" if gain else f"{100 * value:.2f}%"
                right.append(key)
            elif key.startswith("acc_"):
                key = key[4:]
            elif key.startswith("gain_"):
                key = f"{key[5:]} gain"
            out[key] = value
        shown.append(out)
    return shown, list(dict.fromkeys(right))


def is_number(value: Any) -> bool:
    """A real number, numpy's included, but not a bool: the cells a table aligns right."""
    return isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_))


def csv_cell(value: Any) -> str:
    """A CSV cell: None as empty, anything else as str (which keeps every digit of a float)."""
    if isinstance(value, np.generic):
        value = value.item()
    return "" if value is None else str(value)


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows of cells as CSV text, one line per row ending in a newline."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
