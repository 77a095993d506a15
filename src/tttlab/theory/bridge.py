"""From real features to the regime map: measure what the theory's quantities leave visible.

    m = measure(X_ND, y_N, k=50)                       # width, effective ranks, label agreement
    bridge_report(sim_folder, rows, X_ND, y_N, name="fmnist-d25", ttt_gain=0.078)

On real data neither d1 (concepts) nor s (concepts per input) can be read off. What can: the
feature width d2, how many directions the features really use (effective rank), and how alike a
point's k nearest neighbours are (their label agreement, and how far it sits above chance: the
neighbourhood analogue of the simulator's tightness). `place` puts real features beside the
simulated units nearest to them in the measurable plane (effective rank / d2, label agreement
above chance) and reads off those units' settings and TTT's gain there; it is a comparison by
measurable quantities, not an estimate of d1 or s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tttlab.atomic import atomic_write_json, atomic_write_text
from tttlab.checks import check_int
from tttlab.files import need, read_json_object
from tttlab.results import markdown_table
from tttlab.retrieval import KNNIndex
from tttlab.tensors import as_matrix
from tttlab.theory.sweeps import effective_rank, plot_map

NEAREST = 3
"""Simulated units a real data set is compared with."""


def measure(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    k: int = 50,
    ttt_gain: float | None = None,
    queries: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The theory's measurable quantities on features X (N x D) with labels y (N,): width,
    effective ranks (participation ratio and entropy rank, `effective_rank`), classes, and over
    `queries` seeded points the share of their k nearest other points with the same label, beside
    chance (two random points' agreement). `ttt_gain`: TTT's measured gain, carried along."""
    X = as_matrix(X_ND, "X (features)")
    y = np.asarray(y_N)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"labels have shape {y.shape} but the features have {len(X)} rows: pass one label "
            "per row as a 1-D array"
        )
    check_int(k, "k", min=1)
    if k > len(X) - 1:
        raise ValueError(
            f"k={k} but there are only {len(X)} points (a point is not its own neighbour): "
            f"choose k <= {len(X) - 1}"
        )
    check_int(queries, "queries", min=1)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(X), min(queries, len(X)), replace=False))
    nbr = KNNIndex().fit(X).search(X[q], k, exclude=q)[1]
    _, counts = np.unique(y, return_counts=True)
    chance = float(((counts / counts.sum()) ** 2).sum())
    agreement = float(np.mean(y[nbr] == y[q][:, None]))
    ranks = effective_rank(X)
    return {
        "n": len(X),
        "feature_width": X.shape[1],
        "participation_ratio": ranks["participation_ratio"],
        "entropy_rank": ranks["entropy_rank"],
        "rank_ratio": ranks["participation_ratio"] / X.shape[1],
        "classes": len(counts),
        "k": k,
        "label_agreement": agreement,
        "chance_agreement": chance,
        "agreement_above_chance": (agreement - chance) / (1 - chance) if chance < 1 else 0.0,
        "distinct_labels": float(np.mean([len(np.unique(row)) for row in y[nbr]])),
        "ttt_gain": ttt_gain,
    }


def place(measured: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The simulated units nearest to `measured` in (rank_ratio, agreement above chance),
    nearest first, each with its distance, settings and errors."""
    if not rows:
        raise ValueError("no simulated units to compare with: run `tttlab simulate` first")
    at = np.array([measured["rank_ratio"], measured["agreement_above_chance"]])
    coords = np.array([[r["rank_pr"] / r["d2"], _above_chance(r)] for r in rows])
    dist = np.sqrt(((coords - at) ** 2).sum(1))
    nearest = np.argsort(dist, kind="stable")[:NEAREST]
    keep = ("sweep", "d1", "d2", "s", "k", "tightness", "err_global", "err_ttt")
    return [{"distance": float(dist[i])} | {key: rows[i][key] for key in keep} for i in nearest]


def _above_chance(row: dict[str, Any]) -> float:
    chance = row["label_chance"]
    return (row["label_agreement"] - chance) / (1 - chance) if chance < 1 else 0.0


def read_ttt_gain(run_dir: str | Path) -> float:
    """TTT's gain over the global head (accuracy, as a fraction) from a tttlab run folder."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.json: pass a run folder `tttlab ttt` wrote")
    fix = "pass a run folder `tttlab ttt` wrote, scoring global and ttt"
    metrics = read_json_object(path, "a run's metrics", fix)
    gains = need(metrics, "gain_over_global", dict, path, fix)
    if "ttt" not in gains or not isinstance(gains["ttt"], dict):
        raise ValueError(f"{path} records no TTT gain over global: score global and ttt in it")
    return float(need(gains["ttt"], "mean", (int, float), path, fix, "gain_over_global.ttt"))


def bridge_report(
    folder: str | Path,
    rows: Sequence[dict[str, Any]],
    X_ND: np.ndarray,
    y_N: np.ndarray,
    name: str,
    k: int = 50,
    ttt_gain: float | None = None,
) -> Path:
    """Measure the features, place them beside a complete simulation's unit rows, and write
    bridge-<name>.json / .md / .png in its folder; return the report's path."""
    folder = Path(folder)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain file-name stem, e.g. 'fmnist-d25'")
    measured = measure(X_ND, y_N, k, ttt_gain)  # bad input fails before any plot
    nearest = place(measured, rows)
    atomic_write_json(folder / f"bridge-{name}.json", {"measured": measured, "nearest": nearest})
    map_rows = [r for r in rows if r["sweep"] == "map"]
    picture = None
    if map_rows:
        mark = _map_mark(nearest[0], map_rows, name)
        picture = plot_map(map_rows, folder / f"bridge-{name}.png", marks=[mark])
    shown = {key: value for key, value in measured.items() if value is not None}
    parts = [
        f"# Bridge: {name} on the regime map",
        "Effective rank: participation ratio (sum l)^2 / sum l^2 of the features' covariance "
        "eigenvalues (beside it the entropy effective rank). Placement: the simulated units "
        "nearest in (participation ratio / d2, label agreement above chance); a comparison by "
        "measurable quantities, not an estimate of d1 or s.",
        markdown_table(
            [{"quantity": key, "value": value} for key, value in shown.items()],
            ["quantity", "value"],
        ),  # fmt: skip
        "## Nearest simulated units",
        markdown_table(nearest, list(nearest[0])),
    ]
    if picture is not None:
        parts.append(f"![{name} on the regime map]({picture.name})")
    path = folder / f"bridge-{name}.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path


def _map_mark(unit: dict[str, Any], map_rows: Sequence[dict[str, Any]], name: str) -> dict:
    """Where the star goes: the map cell nearest to the nearest unit's (d2/d1, s)."""
    ratios = sorted({r["ratio"] for r in map_rows})
    ss = sorted({r["s"] for r in map_rows})
    j = int(np.argmin([abs(np.log(r / (unit["d2"] / unit["d1"]))) for r in ratios]))
    i = int(np.argmin([abs(np.log(s / unit["s"])) for s in ss]))
    return {"x": j, "y": i, "label": name}
