"""A study's units.csv to a plot of your own: TTT's gain over the global head against the study's
axis, one line per seed.

    tttlab study dataset-size --preset quick
    python examples/plot_units.py runs/studies/dataset-size-<key>/units.csv --x n_train

units.csv has one row per unit: the unit's settings (width, fraction, experts, seed ...), each
method's accuracy (acc_<method>, with ci_low_<method> and ci_high_<method>), TTT's gain over the
global head (gain, with gain_low and gain_high, paired bootstrap) and the settings it ran with.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no window: write a file
import matplotlib.pyplot as plt  # noqa: E402


def read_units(path: Path) -> list[dict[str, float | str]]:
    """The rows of units.csv, numbers as floats."""

    def value(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="", encoding="utf-8") as f:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("units", help="a study folder's units.csv")
    parser.add_argument("--x", default=None, help="the column on the x axis (default: the first)")
    parser.add_argument("--out", default=None, help="the image (default: gain.png beside it)")
    args = parser.parse_args(argv)

    path = Path(args.units)
    rows = read_units(path)
    x = args.x or next(iter(rows[0]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for seed in sorted({row["seed"] for row in rows}):
        mine = sorted((row for row in rows if row["seed"] == seed), key=lambda row: row[x])
        xs = [row[x] for row in mine]
        ax.plot(xs, [100 * row["gain"] for row in mine], "o-", label=f"seed {seed:g}")
        low = [100 * row["gain_low"] for row in mine]
        high = [100 * row["gain_high"] for row in mine]
        ax.fill_between(xs, low, high, alpha=0.2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("TTT - global (accuracy points)")
    ax.legend()
    out = Path(args.out) if args.out else path.with_name("gain.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")
    return out


if __name__ == "__main__":
    main()
