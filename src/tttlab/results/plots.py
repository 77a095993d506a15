"""Study plots: accuracy (or error) of each method against a setting, and TTT's gain over global.

    rows = [study_row({"width": 25, "seed": 0}, evaluation.metrics), ...]   # one per unit
    plot_study(rows, "parameters", ["global", "ttt"], "model-size.png", x_label="parameters",
               reference=paper_references("mnist"))

A study row is a flat dict, one per unit (one setting, one seed):

- `<x>`: the setting on the x axis, a number (> 0 for a log axis), e.g. `parameters`.
- `acc_<m>`, `ci_low_<m>`, `ci_high_<m>` for every plotted method m: its test accuracy and the
  bootstrap CI around it, as fractions in [0, 1] with ci_low <= acc <= ci_high; `se_<m>`, the
  binomial standard error of acc_<m> (the paper's error bars), is carried along for tables.
- optionally `gain`, `gain_low`, `gain_high`: the paired bootstrap of acc_a - acc_b for
  `gain_of = (a, b)` (default TTT minus global), fractions in [-1, 1]; all three or none.
- anything else (seed, settings, seconds) is carried along and ignored by the plot.

Rows that share an x value are seeds of one setting: `mean_over_seeds` plots their mean and a
band from the lowest ci_low to the highest ci_high, so the band covers each seed's test-set
uncertainty and the spread between seeds (a CI of the mean over 2-3 seeds would say little).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tttlab.atomic import atomic_path
from tttlab.checks import check_choice, check_int, check_number
from tttlab.presets import reported
from tttlab.results.stats import binomial_se

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GAIN_TOLERANCE = 5e-4
"""How far `gain` may sit from acc_a - acc_b (the paired mean equals it up to rounding; rows
rounded to 4 digits are off by at most 1.5e-4). Further off, the gain is of another pair."""

MAX_LABELLED_TICKS = 12
"""Up to this many distinct x values, each gets a labelled tick; beyond it, matplotlib's."""

_COLORS = {"global": "tab:blue", "ttt": "tab:red", "majority": "tab:green", "experts": "tab:purple"}
_SPARE_COLORS = ("tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


@dataclass(frozen=True)
class Reference:
    """A value the paper reports: a dashed line in a plot, a row in a report."""

    method: str
    """The method it refers to; the line takes that method's colour."""
    accuracy: float
    """Reported accuracy as a fraction in [0, 1]."""
    pm: float | None
    """The paper's ± as a fraction, or None where it prints none."""
    label: str
    """What it is, e.g. 'global model on the test set (mnist)'."""
    source: str
    """Where the value comes from (paper and table or figure)."""

    def __post_init__(self):
        check_number(self.accuracy, f"reference {self.label!r} accuracy", min=0, max=1)
        if self.pm is not None:
            check_number(self.pm, f"reference {self.label!r} pm", min=0, max=1)


def paper_references(
    dataset: str = "mnist", methods: Sequence[str] = ("global", "ttt"), preset: str = "paper"
) -> list[Reference]:
    """The paper's reported accuracies of `methods` on `dataset` (a key of `reported()`)."""
    report = reported(preset)
    table = report["accuracy"]
    refs = []
    for m in methods:
        check_choice(m, "reference method", tuple(table))
        check_choice(dataset, "reference dataset", tuple(k for k in table[m] if k != "label"))
        value = table[m][dataset]
        pm = None if value["pm"] is None else value["pm"] / 100
        label = f"{table[m]['label']} ({dataset})"
        refs.append(Reference(m, value["mean"] / 100, pm, label, report["source"]))
    return refs


def method_color(method: str) -> str:
    """One colour per method name, the same in every plot (and in every process)."""
    if method in _COLORS:
        return _COLORS[method]
    return _SPARE_COLORS[zlib.crc32(method.encode("utf-8")) % len(_SPARE_COLORS)]


def study_row(
    settings: dict[str, Any], metrics: dict[str, Any], gain_of: str | None = "ttt"
) -> dict[str, Any]:
    """One unit's row: its settings, `parameters`/`feature_width`/`n_test` and every method's
    accuracy, bootstrap CI and binomial standard error from `tttlab.pipeline.evaluate`'s metrics,
    and `gain_of`'s gain over global."""
    row = dict(settings)
    row |= {k: metrics[k] for k in ("parameters", "feature_width", "n_test") if k in metrics}
    for m, a in metrics["methods"].items():
        row |= {f"acc_{m}": a["accuracy"], f"ci_low_{m}": a["ci_low"], f"ci_high_{m}": a["ci_high"]}
        n = a.get("n", metrics.get("n_test"))
        se = a.get("se", binomial_se(a["accuracy"], n) if n else None)  # older metrics: derived
        row[f"se_{m}"] = se
    if gain_of is not None:
        gains = metrics.get("gain_over_global", {})
        if gain_of not in gains:
            raise ValueError(
                f"metrics have no gain over global for {gain_of!r} (they have {sorted(gains)}): "
                "score it with 'global' in the run's methods, or pass gain_of=None"
            )
        g = gains[gain_of]
        row |= {"gain": g["mean"], "gain_low": g["low"], "gain_high": g["high"]}
    return row


# ---------------------------------------------------------------- checking and averaging rows


def check_rows(
    rows: Sequence[dict[str, Any]],
    x: str,
    methods: Sequence[str],
    *,
    log_x: bool = False,
    gain_of: tuple[str, str] = ("ttt", "global"),
) -> bool:
    """Check rows against the study row schema (module docstring); return whether they carry
    gain columns. Every error names the row and the fix."""
    if not rows:
        raise ValueError("rows is empty: pass one dict per unit (see tttlab.results.plots)")
    if not methods:
        raise ValueError("methods is empty: name at least one method, e.g. ['global', 'ttt']")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)} name a method twice: list each once")
    for m in gain_of:
        if m not in methods:
            raise ValueError(
                f"gain_of names {m!r}, which is not in methods {list(methods)}: add it to methods"
            )
    has_gain = "gain" in rows[0]
    for i, row in enumerate(rows):
        where = f"row {i}"
        if x not in row:
            raise ValueError(f"{where} has no x column {x!r} (it has {sorted(row)}): add it")
        check_number(row[x], f"{where} {x}")
        if log_x and row[x] <= 0:
            raise ValueError(
                f"{where}: {x} = {row[x]!r} cannot sit on a log axis: pass log_x=False, or drop "
                "values <= 0"
            )
        for m in methods:
            _check_interval(row, where, f"acc_{m}", f"ci_low_{m}", f"ci_high_{m}", 0.0)
        gain_cols = [c for c in ("gain", "gain_low", "gain_high") if c in row]
        if gain_cols and len(gain_cols) < 3:
            raise ValueError(f"{where} has {gain_cols} but not all of gain, gain_low, gain_high")
        if bool(gain_cols) != has_gain:
            raise ValueError(
                f"{where} {'has' if gain_cols else 'lacks'} gain columns but row 0 "
                f"{'has' if has_gain else 'does not'}: give every row gain, gain_low, gain_high "
                "or none"
            )
        if has_gain:
            _check_interval(row, where, "gain", "gain_low", "gain_high", -1.0)
            a, b = gain_of
            diff = row[f"acc_{a}"] - row[f"acc_{b}"]
            if abs(row["gain"] - diff) > GAIN_TOLERANCE:
                raise ValueError(
                    f"{where}: gain {row['gain']:.4f} is not acc_{a} - acc_{b} = {diff:.4f}: the "
                    f"gain columns must be the paired bootstrap of {a} minus {b}; pass the "
                    "gain_of that they measure"
                )
    return has_gain


def _check_interval(row: dict, where: str, mean: str, low: str, high: str, bottom: float) -> None:
    """row[low] <= row[mean] <= row[high], all numbers in [bottom, 1]."""
    for col in (mean, low, high):
        if col not in row:
            raise ValueError(
                f"{where} has no column {col!r}: every row needs {mean}, {low} and {high} "
                "(see tttlab.results.plots)"
            )
        check_number(row[col], f"{where} {col}")
        if not bottom <= row[col] <= 1:
            hint = ": it looks like a percentage; divide by 100" if 1 < row[col] <= 100 else ""
            raise ValueError(
                f"{where} {col} = {row[col]!r} is not a fraction in [{bottom:g}, 1]{hint}"
            )
    if not row[low] <= row[mean] <= row[high]:
        raise ValueError(
            f"{where}: {low} <= {mean} <= {high} fails ({row[low]}, {row[mean]}, {row[high]}): "
            "check that the interval's columns are not swapped"
        )


def mean_over_seeds(
    rows: Sequence[dict[str, Any]], x: str, methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows sharing an x value merged into one, sorted by x: the mean of each accuracy (and gain),
    its band from the lowest low to the highest high, and `n_seeds`, the rows merged."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[x], []).append(row)
    triples = [(f"acc_{m}", f"ci_low_{m}", f"ci_high_{m}") for m in methods]
    if rows and "gain" in rows[0]:
        triples.append(("gain", "gain_low", "gain_high"))
    merged = []
    for value in sorted(groups):
        group = groups[value]
        out: dict[str, Any] = {x: value, "n_seeds": len(group)}
        for mean, low, high in triples:
            out[mean] = math.fsum(r[mean] for r in group) / len(group)
            out[low] = min(r[low] for r in group)
            out[high] = max(r[high] for r in group)
        merged.append(out)
    return merged


# ---------------------------------------------------------------- the figure


def plot_study(
    rows: Sequence[dict[str, Any]],
    x: str,
    methods: Sequence[str],
    path: str | Path,
    *,
    x_label: str,
    log_x: bool = True,
    title: str = "",
    gain_of: tuple[str, str] = ("ttt", "global"),
    reference: Sequence[Reference] | None = None,
    metric: Literal["accuracy", "error"] = "accuracy",
    dpi: int = 150,
) -> Path:
    """Write a PNG of each method's accuracy (or error) against `x`, above the gain of
    `gain_of[0]` over `gain_of[1]`; seeds averaged as `mean_over_seeds` says. Atomic."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path {path} must end in .png: plot_study writes PNG images")
    check_choice(metric, "metric", ("accuracy", "error"))
    gain_of = tuple(gain_of)
    if len(gain_of) != 2:
        raise ValueError(f"gain_of must name two methods (a, b) for a - b, got {gain_of!r}")
    has_gain = check_rows(rows, x, methods, log_x=log_x, gain_of=gain_of)
    merged = mean_over_seeds(rows, x, methods)
    xs = [r[x] for r in merged]
    counts = sorted({r["n_seeds"] for r in merged})
    seeds = counts[-1]

    fig = figure((7, 7.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    _accuracy_panel(top, rows, merged, x, methods, reference or [], metric, seeds)
    _gain_panel(bottom, merged, xs, gain_of, has_gain)
    if log_x:
        bottom.set_xscale("log")
    _x_ticks(bottom, xs, log_x)
    bottom.set_xlabel(x_label)
    many = f"{seeds}" if len(counts) == 1 else f"{counts[0]}-{seeds}"
    note = (
        f"line: mean of {many} seeds (dots); band: from the lowest to the highest seed's CI"
        if seeds > 1
        else "band: bootstrap CI"
    )
    fig.suptitle("\n".join(filter(None, [title, note])), fontsize=11)
    return save_figure(fig, path, dpi=dpi)


def plot_histogram(
    values: Sequence[float],
    path: str | Path,
    *,
    x_label: str,
    title: str = "",
    marks: dict[str, float] | None = None,
    dpi: int = 150,
) -> Path:
    """A histogram of fractions (e.g. each local head's test accuracy) in %, with labelled
    vertical lines at `marks` (e.g. the global head's accuracy); PNG, written atomically."""
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"{path}: plots are PNG files; name it *.png")
    if not len(values):
        raise ValueError("no values to draw: pass at least one")
    fig = figure((7, 4))
    ax = fig.add_subplot()
    ax.hist([100 * v for v in values], bins=min(30, max(5, len(values) // 3)), color="tab:red")
    for i, (label, value) in enumerate((marks or {}).items()):
        ax.axvline(100 * value, color=_SPARE_COLORS[i % len(_SPARE_COLORS)], linestyle="--")
        ax.text(100 * value, ax.get_ylim()[1] * 0.95, f" {label}", rotation=90, va="top")
    ax.set_xlabel(f"{x_label} (%)")
    ax.set_ylabel("test points")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path, dpi=dpi)


def figure(figsize: tuple[float, float] = (7, 4)) -> Figure:
    """A matplotlib Figure (size in inches) on the Agg canvas, for `save_figure`."""
    # matplotlib loads here, not at import: the CLI imports tttlab.results and should not pay
    # half a second for it. A bare Figure, not pyplot: no window, no global figure list to
    # close, and the caller's own backend (a notebook's) is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Lay `fig` out tightly and write it to `path` (its suffix picks the format: .png, .pdf,
    .svg), through a temp file and a rename, so an interrupted save leaves no half image."""
    path = Path(path)
    fmt = path.suffix.lower().removeprefix(".")
    formats = fig.canvas.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(
            f"{path}: cannot tell the image format from the suffix {path.suffix!r}; name it "
            f"*.png (or {', '.join(f'*.{f}' for f in sorted(formats) if f != 'png')})"
        )
    check_int(dpi, "dpi", min=1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def _accuracy_panel(
    ax: Any,
    rows: Sequence[dict[str, Any]],
    merged: list[dict[str, Any]],
    x: str,
    methods: Sequence[str],
    reference: Sequence[Reference],
    metric: str,
    seeds: int,
) -> None:
    """One line per method with its band, faint dots per seed, dashed reference lines."""

    def shown(v: float) -> float:  # percent of the chosen metric
        return 100 * (v if metric == "accuracy" else 1 - v)

    xs = [r[x] for r in merged]
    for m in methods:
        color = method_color(m)
        lo = [shown(r[f"ci_low_{m}"]) for r in merged]
        hi = [shown(r[f"ci_high_{m}"]) for r in merged]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.plot(xs, [shown(r[f"acc_{m}"]) for r in merged], "o-", color=color, label=m, ms=4)
        if seeds > 1:
            ax.scatter(
                [r[x] for r in rows], [shown(r[f"acc_{m}"]) for r in rows], s=8, color=color,
                alpha=0.45, linewidths=0,
            )  # fmt: skip
    for ref in reference:
        ax.axhline(
            shown(ref.accuracy), color=method_color(ref.method), linestyle="--", linewidth=1,
            label=f"paper: {ref.label}",
        )  # fmt: skip
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "test error (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _gain_panel(
    ax: Any, merged: list[dict[str, Any]], xs: list[float], gain_of: tuple[str, str], has_gain: bool
) -> None:
    """The gain in accuracy points with its paired band, or the plain difference without one."""
    a, b = gain_of
    color = method_color(a)
    if has_gain:
        gain = [100 * r["gain"] for r in merged]
        lo = [100 * r["gain_low"] for r in merged]
        hi = [100 * r["gain_high"] for r in merged]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        label = f"{a} - {b} (band: paired bootstrap CI)"
    else:
        gain = [100 * (r[f"acc_{a}"] - r[f"acc_{b}"]) for r in merged]
        label = f"{a} - {b} (no paired CI in the rows)"
    ax.plot(xs, gain, "o-", color=color, label=label, ms=4)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"gain of {a} over {b}\n(accuracy points)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _x_ticks(ax: Any, xs: list[float], log_x: bool) -> None:
    """Few x values: a labelled tick at each, as compact numbers (25, 1152, 12k, 3.4M)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    formatter = FuncFormatter(lambda v, _: compact_number(v))
    if len(xs) <= MAX_LABELLED_TICKS:
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
    elif log_x:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(formatter)
    if 8 < len(xs) <= MAX_LABELLED_TICKS:
        ax.tick_params(axis="x", labelrotation=45)  # crowded labels would overlap


def compact_number(value: float) -> str:
    """A tick label: 3 significant digits, with k, M or B above 10^4 (25, 1152, 12.3k, 3.4M)."""
    for above, unit, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= above:
            return f"{value / unit:.3g}{suffix}"
    return f"{value:.4g}"
